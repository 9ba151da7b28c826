"""The bounce mailbox end to end: a message is sent and accepted with 250 by a real TLS+AUTH
server, its DSN or complaint arrives later in a real IMAP mailbox (Dovecot over TLS), and
``mailworker bounces`` (a real process) suppresses the address, turns the recipient's status
to ``bounced`` / ``complained`` and writes one event, however often it is killed half-way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailworker import send_email, status
from mailworker.delivery.crashpoint import READER_STEPS
from mailworker.dev.devserver import DevServer
from mailworker.settings import reload_settings
from mailworker.store import keys
from mailworker.store.suppression import entries, suppressed
from tests.bounce_mail import arf, auto_reply, block, dsn
from tests.helpers import extra_account, messages_of, send_many, wait_all_sent, wait_for_status
from tests.imap_server import DOVECOT, DovecotServer
from tests.sentry_sink import SentrySink
from tests.test_feedback_reports import CORPUS, SISIMAI

pytestmark = [
    pytest.mark.skipif(DOVECOT is None, reason="needs Dovecot (apt-get install dovecot-imapd)"),
    pytest.mark.usefixtures("celery_worker"),
]
DONE = "mailworker-done"
USER_UNKNOWN = "550 5.1.1 <{0}>: Recipient address rejected: User unknown in local recipient table"


@pytest.fixture(scope="module")
def imap(ca: trustme.CA) -> Iterator[DovecotServer]:
    server = DovecotServer(ca).start()
    yield server
    server.stop()


@pytest.fixture
def mailbox(imap: DovecotServer, redis: Any) -> Iterator[DovecotServer]:
    imap.empty()
    redis.delete(keys.EVENTS)
    yield imap


def bounces(imap: DovecotServer, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``mailworker bounces check`` in its own process, as an operator or the Procfile runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mailworker.cli", "bounces", "check", *args],
        env={**os.environ, "BOUNCE_MAILBOX_URL": imap.url(), "EVENTS_TASK": "app.on_mail_event",
             **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def sent_copy(server: DevServer, to: str, **extra: Any) -> tuple[str, str]:
    """Send a message through the worker; the job id and what the server received."""
    job = send_email.delay(to=to, subject="Your receipt", text="Thanks.", **extra)
    wait_for_status(job.id, "sent")
    [message] = messages_of(server, job.id)
    return job.id, message.data.decode()


def events_of(redis: Any, job_id: str) -> list[dict[str, str]]:
    found = [{k.decode(): v.decode() for k, v in f.items()} for _, f in redis.xrange(keys.EVENTS)]
    return [e for e in found if e["job_id"] == job_id]


def test_a_dsn_arriving_later_suppresses_the_address_and_marks_the_job_bounced(
    mailbox: DovecotServer, starttls_server: DevServer, redis: Any
) -> None:
    job_id, original = sent_copy(starttls_server, "gone@example.com", tags={"kind": "receipt"})
    mailbox.deliver(dsn(original, block("gone@example.com", "failed", "5.1.1",
                                        USER_UNKNOWN.format("gone@example.com"))))  # fmt: skip

    run = bounces(mailbox)
    assert run.returncode == 0, run.stderr
    assert "1 bounce" in run.stdout and "1 new" in run.stdout

    assert suppressed(("gone@example.com",)) == {"gone@example.com"}
    (entry,) = entries(("gone@example.com",))
    assert entry is not None
    assert (entry.type, entry.source, entry.status) == ("hard-bounce", "dsn", "5.1.1")
    record = status(job_id)
    assert record is not None and record["state"] == "sent"
    assert record["recipients"] == {"gone@example.com": "bounced 5.1.1 hard"}
    [event] = events_of(redis, job_id)
    assert (event["type"], event["recipient"], event["code"]) == ("bounced", "gone@example.com",
                                                                 "5.1.1")  # fmt: skip
    assert event["id"] == f"{job_id}/gone@example.com/bounced" and '"receipt"' in event["tags"]
    assert (mailbox.count("INBOX"), mailbox.count(DONE)) == (0, 1)

    # The next message to the address is refused before any SMTP: nothing reaches the server.
    again = send_email.delay(to="gone@example.com", subject="again", text="x")
    wait_for_status(again.id, "failed")
    assert messages_of(starttls_server, again.id) == []


def test_an_arf_complaint_stops_campaign_mail_but_not_receipts(
    mailbox: DovecotServer, starttls_server: DevServer, redis: Any
) -> None:
    job_id, original = sent_copy(starttls_server, "angry@example.com")
    mailbox.deliver(arf(original, "angry@example.com"))

    run = bounces(mailbox)
    assert run.returncode == 0 and "1 complaint" in run.stdout, run.stdout + run.stderr

    (bulk,) = entries(("angry@example.com",), "bulk")
    assert bulk is not None and (bulk.type, bulk.source) == ("complaint", "arf")
    assert suppressed(("angry@example.com",)) == set()  # receipts and resets still go
    assert status(job_id)["recipients"] == {"angry@example.com": "complained abuse"}  # type: ignore[index]
    assert [e["type"] for e in events_of(redis, job_id)] == ["complained"]
    receipt, _ = sent_copy(starttls_server, "angry@example.com")
    assert len(messages_of(starttls_server, receipt)) == 1


def test_soft_bounces_suppress_from_campaigns_only_after_the_limit(
    mailbox: DovecotServer, starttls_server: DevServer
) -> None:
    for n in range(3):
        _, original = sent_copy(starttls_server, "full@example.com")
        mailbox.deliver(dsn(original, block("full@example.com", "failed", "5.2.2",
                                            "552 5.2.2 Mailbox full")))  # fmt: skip
        assert bounces(mailbox).returncode == 0
        (bulk,) = entries(("full@example.com",), "bulk")
        if n < 2:
            assert bulk is None, f"suppressed after {n + 1} soft bounce(s)"
    assert bulk is not None and bulk.type == "soft-bounce" and bulk.expires_at is not None
    assert suppressed(("full@example.com",)) == set()


def test_auto_replies_backscatter_and_strangers_suppress_nobody(
    mailbox: DovecotServer, starttls_server: DevServer, redis: Any
) -> None:
    job_id, original = sent_copy(starttls_server, "ann@example.com")
    forged = original.replace(job_id, "not-a-job-of-ours")
    mailbox.deliver(
        auto_reply(f"<{job_id}@example.com>"),
        dsn(forged, block("ann@example.com", "failed", "5.1.1", USER_UNKNOWN.format("ann"))),
        # Our message, but a recipient it never had:
        dsn(original, block("bob@example.com", "failed", "5.1.1", USER_UNKNOWN.format("bob"))),
        b"From: someone@example.net\r\nSubject: hello\r\n\r\nNot a report.\r\n",
    )
    run = bounces(mailbox)
    assert run.returncode == 0, run.stderr
    assert "2 unmatched" in run.stdout and "1 auto-reply" in run.stdout
    assert suppressed(("ann@example.com", "bob@example.com")) == set()
    assert status(job_id)["recipients"] == {"ann@example.com": "sent"}  # type: ignore[index]
    assert events_of(redis, job_id) == []
    assert (mailbox.count("INBOX"), mailbox.count(DONE)) == (0, 4)


@pytest.mark.parametrize("step", READER_STEPS)
def test_a_reader_killed_half_way_loses_and_repeats_nothing(
    step: str, mailbox: DovecotServer, starttls_server: DevServer, redis: Any, tmp_path: Path
) -> None:
    jobs = []
    for n in range(3):
        job_id, original = sent_copy(starttls_server, f"dead{n}@example.com")
        mailbox.deliver(dsn(original, block(f"dead{n}@example.com", "failed", "5.1.1",
                                            USER_UNKNOWN.format(n))))  # fmt: skip
        jobs.append(job_id)

    killed = bounces(mailbox, MAILWORKER_CRASH_AT=step,
                     MAILWORKER_CRASH_ONCE=str(tmp_path / "crashed"))  # fmt: skip
    assert killed.returncode == -9  # SIGKILL at the step, on the first message
    assert mailbox.count("INBOX") == 3
    first_applied = bool(suppressed(("dead0@example.com",)))
    assert first_applied == (step == "report-applied")

    again = bounces(mailbox, MAILWORKER_CRASH_AT=step,
                    MAILWORKER_CRASH_ONCE=str(tmp_path / "crashed"))  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (mailbox.count("INBOX"), mailbox.count(DONE)) == (0, 3)
    expected_new = "2 new" if first_applied else "3 new"
    assert expected_new in again.stdout
    assert ("1 repeat" in again.stdout) == first_applied
    for n, job_id in enumerate(jobs):
        assert status(job_id)["recipients"] == {f"dead{n}@example.com": "bounced 5.1.1 hard"}  # type: ignore[index]
        assert [e["type"] for e in events_of(redis, job_id)] == ["bounced"]
    assert redis.hget(keys.stats("default"), "hard") is not None


def test_complaint_and_bounce_rates_reach_stats_and_one_sentry_alert(
    mailbox: DovecotServer, starttls_server: DevServer
) -> None:
    """100 recipients sent through a fresh account, 2 complaints and 1 hard bounce come
    back: 2% and 1% over 24 hours; the complaint rate is over its 0.3% line, so Sentry
    gets one event (not two), and the hard-bounce rate, under 5%, none."""
    sink = SentrySink().start()
    try:
        with extra_account("rates", starttls_server.url()):
            job_ids = send_many(100, "rates")
            wait_all_sent(job_ids)
            copies = {j: messages_of(starttls_server, j)[0].data.decode() for j in job_ids[:3]}
            first, second, third = job_ids[:3]
            mailbox.deliver(arf(copies[first], "reader0@example.com"),
                            dsn(copies[third], block("reader2@example.com", "failed", "5.1.1",
                                                     USER_UNKNOWN.format("reader2"))))  # fmt: skip
            assert bounces(mailbox, SENTRY_DSN=sink.dsn).returncode == 0
            mailbox.deliver(arf(copies[second], "reader1@example.com"))
            assert bounces(mailbox, SENTRY_DSN=sink.dsn).returncode == 0

            stats = subprocess.run([sys.executable, "-m", "mailworker.cli", "stats", "--json"],
                                   capture_output=True, text=True, timeout=60)  # fmt: skip
            last_day = json.loads(stats.stdout)["last_24h"]["rates"]
            assert (last_day["sent"], last_day["complained"], last_day["hard"]) == (100, 2, 1)
            assert (last_day["complaint_rate"], last_day["hard_bounce_rate"]) == (0.02, 0.01)
        alerts = [e for e in sink.events() if e.get("tags", {}).get("account") == "rates"]
        assert [e["tags"]["failure"] for e in alerts] == ["complaint_rate"]
        assert "complaint rate 1.00% over 24 hours" in json.dumps(alerts[0])
    finally:
        sink.stop()


def test_with_return_path_a_bounce_quoting_nothing_finds_its_job_by_its_verp_address(
    mailbox: DovecotServer, starttls_server: DevServer
) -> None:
    os.environ["RETURN_PATH"] = "bounces@example.com"
    reload_settings()
    try:
        job = send_email.delay(to="verp@example.com", subject="Your receipt", text="x")
        wait_for_status(job.id, "sent")
        [copy] = messages_of(starttls_server, job.id)
        assert copy.mail_from == f"bounces+{job.id}@example.com"
        # Returned with no part of the original: only the address it came back to names it.
        unknown = block("verp@example.com", "failed", "5.1.1", USER_UNKNOWN.format("verp"))
        returned = dsn("Subject: (nothing returned)\n", unknown, headers_only=True,
                       to=f"bounces+{job.id}@example.com")  # fmt: skip
        mailbox.deliver(returned)
        run = bounces(mailbox)
        assert run.returncode == 0 and "1 new" in run.stdout, run.stdout + run.stderr
    finally:
        del os.environ["RETURN_PATH"]
        reload_settings()
    assert suppressed(("verp@example.com",)) == {"verp@example.com"}
    assert status(job.id)["recipients"] == {"verp@example.com": "bounced 5.1.1 hard"}  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(n for n, (_, mid, _r) in SISIMAI.items() if mid))
def test_real_provider_reports_find_their_job_and_recipient(
    name: str, mailbox: DovecotServer, starttls_server: DevServer, redis: Any
) -> None:
    """Each real report (Sisimai's corpus) about a message we really sent: the original's
    Message-ID in it is made ours, as it would be; the effect is the one its kind demands."""
    kind, original_id, recipients = SISIMAI[name]
    addressed = list(recipients) or ["reader@example.com"]
    job = send_email.delay(to=addressed, subject="Your receipt", text="x")
    wait_for_status(job.id, "sent")
    raw = (CORPUS / f"sisimai_{name}.eml").read_bytes()
    mailbox.deliver(raw.replace(original_id.encode(), f"<{job.id}@example.com>".encode()))

    run = bounces(mailbox)
    assert run.returncode == 0, run.stderr
    assert f"1 {kind}" in run.stdout
    record = status(job.id)
    assert record is not None
    for address, severity in recipients.items():
        where = record["recipients"][address]
        (everywhere,), (campaigns,) = entries([address]), entries([address], "bulk")
        if severity == "complaint":
            assert where.startswith("complained") and campaigns is not None
            assert everywhere is None
        else:
            assert where.startswith("bounced") and where.endswith(severity), where
            assert (everywhere is not None) == (severity == "hard")
            assert campaigns is None
    if not recipients:  # an auto-reply, a DMARC report: nothing happens to anyone
        assert set(record["recipients"].values()) == {"sent"}
        assert suppressed(tuple(addressed)) == set() and events_of(redis, job.id) == []
    else:
        assert [e["type"] for e in events_of(redis, job.id)] == (
            ["complained"] if kind == "complaint" else ["bounced"] * len(recipients)
        )


def test_doctor_checks_the_bounce_mailbox_and_never_echoes_its_password(
    mailbox: DovecotServer,
) -> None:
    def doctor(url: str) -> dict[str, Any]:
        run = subprocess.run(
            [sys.executable, "-m", "mailworker.cli", "doctor", "--offline", "--json"],
            env={**os.environ, "BOUNCE_MAILBOX_URL": url}, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        output = run.stdout + run.stderr
        assert mailbox.password not in output and "not-the-password" not in output
        return {f["check"]: f for f in json.loads(run.stdout)}["bounce mailbox"]

    mailbox.deliver(auto_reply("<someone@example.com>"))
    good = doctor(mailbox.url())
    assert good["ok"] is True and "1 message(s) waiting" in good["detail"]
    wrong = mailbox.url().replace("imap-S3cret", "not-the-password")
    bad = doctor(wrong)
    assert bad["ok"] is False and "BOUNCE_MAILBOX_URL" in bad["advice"]
