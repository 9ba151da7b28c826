"""What a returned message means: real bounces (flufl.bounce's corpus, Apache-2.0, in
tests/corpus/bounces) and DSNs, ARF complaints and auto-replies shaped as Postfix, Gmail
and Outlook send them. Only a recipient that clearly does not exist is a hard bounce: a
wrong suppression is data loss, so anything vague is soft (counted, not suppressed).
"""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from mailworker.feedback.reports import read_report
from tests.bounce_mail import arf, block, dsn

CORPUS = Path(__file__).parent / "corpus" / "bounces"
JOB = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def _original(to: str = "ann@example.com") -> EmailMessage:
    original = EmailMessage()
    original["From"] = "App <app@example.com>"
    original["To"] = to
    original["Subject"] = "Your receipt"
    original["Message-ID"] = f"<{JOB}@example.com>"
    original.set_content("Thanks.")
    return original


def _dsn(*blocks: str, headers_only: bool = False) -> bytes:
    return dsn(_original().as_string(), *blocks, headers_only=headers_only)


def _complaint_report(recipient: str) -> bytes:
    return arf(_original(recipient).as_string(), recipient)


def test_a_postfix_user_unknown_is_a_hard_bounce_of_that_job() -> None:
    raw = _dsn(
        block(
            "ann@example.com",
            "failed",
            "5.1.1",
            "550 5.1.1 <ann@example.com>: Recipient address rejected: "
            "User unknown in local recipient table",
        )
    )
    report = read_report(raw)
    assert report.kind == "bounce" and report.job_id == JOB
    [recipient] = report.recipients
    assert (recipient.address, recipient.severity, recipient.status) == (
        "ann@example.com",
        "hard",
        "5.1.1",
    )
    assert "User unknown" in recipient.diagnostic


def test_a_multi_recipient_dsn_judges_each_recipient_on_its_own() -> None:
    raw = _dsn(
        block(
            "gone@example.com",
            "failed",
            "5.1.1",
            "550 5.1.1 The email account that you tried to reach does not exist.",
        ),
        block(
            "full@example.com",
            "failed",
            "5.2.2",
            "552 5.2.2 The email account that you tried to reach is over quota.",
        ),
        block(
            "slow@example.com",
            "delayed",
            "4.4.1",
            "connect to mx.example.org: Connection timed out",
        ),
        block("spam@example.com", "failed", "5.7.1", "550 5.7.1 Message rejected as spam"),
        headers_only=True,
    )
    report = read_report(raw)
    assert report.job_id == JOB
    assert {r.address: r.severity for r in report.recipients} == {
        "gone@example.com": "hard",
        "full@example.com": "soft",  # a full mailbox is never a reason to suppress
        "slow@example.com": "delayed",  # news, not a failure
        "spam@example.com": "soft",  # refused for this message, the person exists
    }


def test_an_arf_complaint_names_the_recipient_and_the_job() -> None:
    found = read_report(_complaint_report("carl@example.com"))
    assert found.kind == "complaint" and found.job_id == JOB
    [recipient] = found.recipients
    assert (recipient.address, recipient.severity, recipient.feedback_type) == (
        "carl@example.com",
        "complaint",
        "abuse",
    )


def test_an_out_of_office_reply_is_not_a_bounce() -> None:
    reply = EmailMessage()
    reply["From"] = "Ann <ann@example.com>"
    reply["Subject"] = "Automatic reply: Your receipt"
    reply["Auto-Submitted"] = "auto-replied"
    reply["In-Reply-To"] = f"<{JOB}@example.com>"
    reply.set_content("I am out of the office until Monday.")
    report = read_report(reply.as_bytes())
    assert report.kind == "auto-reply" and report.recipients == () and report.job_id == JOB


def test_a_message_that_is_no_report_changes_nothing() -> None:
    note = EmailMessage()
    note["From"] = "someone@example.org"
    note["Subject"] = "hello"
    note.set_content("just a note")
    assert read_report(note.as_bytes()).kind == "unknown"
    assert read_report(b"\x00\xff not even mail").recipients == ()


# Real DSNs from real MTAs (flufl.bounce's test data). Vague permanent codes (5.0.0 with
# "disk quota", 5.0.0 alone, an X.400 recipient) are soft: only 5.1.1 is hard.
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("flufl_dsn_01.txt", {"userx@sims-ms-daemon": "soft"}),  # 5.0.0 disk quota
        ("flufl_dsn_04.txt", {"HAASM@yogi.urz.example.ch": "soft"}),  # 5.0.0, no reason
        ("flufl_dsn_05.txt", {"userx@example.cz": "delayed"}),
        ("flufl_dsn_09.txt", {}),  # an X.400 address: not ours to judge
        # 5.0.0, but the RCPT reply says "User unknown": the same judgement as live
        ("flufl_dsn_10.txt", {"anne.person@dom.ain": "hard"}),
        ("flufl_dsn_11.txt", {"joem@example.com": "hard"}),
        ("flufl_dsn_15.txt", {"userx@example.com": "hard"}),
    ],
)
def test_real_dsns_from_the_corpus(name: str, expected: dict[str, str]) -> None:
    report = read_report((CORPUS / name).read_bytes())
    assert report.kind == "bounce"
    assert {r.address: r.severity for r in report.recipients} == expected


@pytest.mark.parametrize(
    "name", ["flufl_qmail_01.txt", "flufl_microsoft_01.txt", "flufl_simple_01.txt"]
)
def test_non_standard_bounces_without_a_clear_reason_are_never_hard(name: str) -> None:
    """qmail's "<address>:" with nothing after it, an old Exchange notice, free text: they
    name no reason a recipient does not exist, so they suppress nobody."""
    report = read_report((CORPUS / name).read_bytes())
    assert all(r.severity != "hard" for r in report.recipients)


# What each real provider's report means (Sisimai's corpus, BSD-2-Clause): kind, the
# original's Message-ID, and each recipient's judgement. Office 365's 5.1.351 says "unknown
# recipient or mailbox unavailable": ambiguous, so soft (counted, never suppressed at once).
SISIMAI = {
    "postfix": ("bounce", "<20140701000000.000000000000@e1.example.ne.jp>",
                {"kijitora@example.net": "hard"}),
    "postfix_two_recipients": ("bounce", None, {"filtered@example.co.jp": "soft",
                                                "userunknown@example.co.jp": "hard"}),
    "exim": ("bounce", "<d111875269acf00cb339571a5a2ce349.squirrel@example.com>",
             {"kijitora@icloud.example.com": "hard"}),
    "office365": ("bounce",
                  "<SLXP216MB0381A8F03A83505296890D11A9950@SLXP216MB0381.KORP216.PROD.OUTLOOK.COM>",
                  {"otsu-sakaba-hunter-neko-nyaaaaaaan@ezweb.ne.jp": "soft"}),
    "gmail": ("bounce", "<CAByYQsEX_JRXGPsXSPPDkp_7RcmLbQcOERwTgCTFt-kq-ayXjQ@mail.gmail.com>",
              {"otsu-sakaba-hunter-neko-nyaaaaaaan@ezweb.ne.jp": "hard"}),
    "yahoo": ("bounce", "<D957E346-5D46-47EE-8CEF-EF76A51AFD20@yahoo.com>",
              {"mailboxfull@libsisimai.org": "soft"}),
    "amazonses": ("bounce",
                  "<01010157b3c0c026-110cf920-4be1-4c36-87c0-1f48d0cc6639-000000@us-west-2.amazonses.com>",
                  {"bounce@simulator.amazonses.com": "hard"}),
    "mailbox_full": ("bounce", "<qbddfL3NB0z0D2Ld@smtp-gw1.example.jp>",
                     {"kijitora@google.example.com": "soft"}),
    "arf": ("complaint", "<000000000000000000000000.smtp@example.com>",
            {"this-local-part-does-not-exist-on-yahoo@yahoo.com": "complaint"}),
    "microsoft_jmrp_complaint": ("complaint", "<d4cb0d6593464552a34f4429b3e7f92f@example.com>",
                                 {"recipient@hotmail.com": "complaint"}),
    "arf_dmarc_auth_failure": ("unknown", "<105855309.1523556.1415796020873@example.net>", {}),
    "auto_reply": ("auto-reply",
                   "<20170210191426.1wKDapP798yQEJKMGjlLVAmNMYzWOBbq@example.net.br>", {}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SISIMAI))
def test_real_provider_reports(name: str) -> None:
    kind, message_id, recipients = SISIMAI[name]
    report = read_report((CORPUS / f"sisimai_{name}.eml").read_bytes())
    assert (report.kind, report.message_id) == (kind, message_id)
    assert {r.address: r.severity for r in report.recipients} == recipients
