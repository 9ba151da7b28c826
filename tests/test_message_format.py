"""The message bytes mailworker writes itself parse to what the stdlib's EmailMessage builds.

worker/message.py writes headers and simple bodies directly (about 50x cheaper than
``email.message.EmailMessage``); these properties hold it to the stdlib's meaning for every
input the producer accepts, and pin the List-Unsubscribe fix: a long ASCII URL is folded,
never RFC 2047-encoded (providers do not read an encoded List-Unsubscribe).
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mailworker.delivery.headers import header_block, unstructured
from mailworker.delivery.message import build_envelope
from mailworker.settings import load_settings
from mailworker.store.job import EmailJob
from mailworker.tasks import InvalidEmail
from mailworker.tasks.validation import build_job, encoded_length

SETTINGS = load_settings({"SMTP_URL": "smtps://u:p@h", "DEFAULT_FROM_EMAIL": "a@example.com"})
text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300
) | st.sampled_from(["", "x", ".\n..\n.", "a\r\nb\rc\n", "é" * 90, "w " * 60, "x" * 200])
name = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=30)
# File names the stdlib writes faithfully (it decodes an encoded word, "=?", in one: the bug
# worker/mime.py exists for; tests/test_hostile_input.py holds those to the literal name).
file_name = st.one_of(
    st.sampled_from(["a.pdf", "a b.txt", 'q"uote;x=1.pdf', "résumé.pdf", "%41.txt", "é" * 80]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=80),
).filter(lambda n: n.strip() == n and n not in ("", ".", "..") and "=?" not in n)
MIME_TYPES = ["application/pdf", "text/plain", "image/png", "application/octet-stream"]


def _reference(job: EmailJob) -> bytes:
    """How the stdlib would build the job (the code mailworker used before)."""
    message = EmailMessage(policy=email.policy.SMTP.clone(cte_type="7bit"))

    def address(box: tuple[str, str]) -> Address:
        local, _, domain = box[1].rpartition("@")
        return Address(display_name=box[0], username=local, domain=domain)

    message["From"] = address(job.from_email)
    message["To"] = [address(m) for m in job.to]
    message["Subject"] = job.subject
    for header, value in job.headers:
        message[header] = value
    if job.text is not None:
        message.set_content(job.text)
        if job.html is not None:
            message.add_alternative(job.html, subtype="html")
    else:
        message.set_content(job.html or "", subtype="html")
    for attachment in job.attachments:
        maintype, _, subtype = attachment.mimetype.partition("/")
        message.add_attachment(
            base64.b64decode(attachment.content_b64),
            maintype=maintype,
            subtype=subtype,
            filename=attachment.filename,
        )
    return message.as_bytes()


def _normal(content: str | bytes) -> str | bytes:
    return content.replace("\r\n", "\n") if isinstance(content, str) else content


def _spaced(text: str) -> str:
    return " ".join(text.split())


def _unspaced(text: str) -> str:
    return "".join(text.split())


def _meaning(data: bytes) -> dict[str, Any]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    bodies = [
        (part.get_content_type(), _normal(part.get_content()))
        for part in message.walk()
        if not part.is_multipart()
    ]
    return {
        # White space in display names compared as runs: the stdlib's address parser reads
        # a name that is one encoded word, "0 \xa00", back as "0 0".
        "from": [(_spaced(a.display_name), a.addr_spec) for a in message["From"].addresses],
        "to": [(_spaced(a.display_name), a.addr_spec) for a in message["To"].addresses],
        # Edge spaces: the stdlib drops them around encoded words; we keep them.
        "subject": str(message["Subject"]).strip(),
        "extra": str(message.get("X-Campaign", "")).strip(),
        "type": message.get_content_type(),
        "bodies": bodies,
        "attachments": [
            (part.get_filename(), part.get_content_type()) for part in message.iter_attachments()
        ],
        "defects": [type(d).__name__ for part in message.walk() for d in part.defects],
    }


@settings(max_examples=300, deadline=None)
@given(
    subject=text,
    body=text,
    html=st.none() | text,
    display=name,
    extra=st.none() | text,
    attach=st.lists(st.tuples(file_name, st.sampled_from(MIME_TYPES)), max_size=2),
)
def test_our_bytes_mean_what_the_stdlib_builds(
    subject: str,
    body: str,
    html: str | None,
    display: str,
    extra: str | None,
    attach: list[tuple[str, str]],
) -> None:
    arguments: dict[str, Any] = {
        "to": [f'"{display}" <reader@example.com>' if display else "reader@example.com"],
        "subject": subject,
        "text": body,
        "html": html,
    }
    if extra is not None:
        arguments["headers"] = {"X-Campaign": extra}
    if attach:
        content = base64.b64encode(b"%PDF-1.4 ...").decode()
        arguments["attachments"] = [
            {"filename": filename, "mimetype": kind, "content_b64": content}
            for filename, kind in attach
        ]
    try:
        job = build_job(SETTINGS, arguments)
    except InvalidEmail:
        return
    ours, theirs = _meaning(build_envelope(job).data), _meaning(_reference(job))
    assert ours["defects"] == []
    # Names against the job itself, whitespace aside: a name longer than one encoded word
    # (RFC 2047) is split into several, and the stdlib's parser, unlike RFC 2047 (6.2) and
    # mail clients, reads a space between adjacent encoded words ("¡¡" split as "¡" "¡"
    # reads back "¡ ¡"; the stdlib's own encoding does the same).
    assert [(_unspaced(n), a) for n, a in ours["to"]] == [(_unspaced(n), a) for n, a in job.to]
    assert {k: v for k, v in ours.items() if k not in ("defects", "to")} == {
        k: v for k, v in theirs.items() if k not in ("defects", "to")
    }


def test_a_long_list_unsubscribe_url_is_folded_never_encoded() -> None:
    url = "https://app.example.com/unsubscribe?token=" + "t0K3n" * 30
    job = build_job(
        SETTINGS,
        {
            "to": "reader@example.com",
            "subject": "s",
            "text": "t",
            "headers": {"List-Unsubscribe": f"<{url}>, <mailto:unsubscribe@example.com>"},
        },
    )
    data = build_envelope(job).data
    header = data.split(b"\r\n\r\n")[0].decode()
    assert f"List-Unsubscribe: <{url}>," in header
    assert "=?utf-8?" not in header
    assert all(len(line) <= 998 for line in header.split("\r\n"))


# Words, and between them runs of spaces and tabs: what folding has to cut.
white = st.text(" \t", min_size=1, max_size=90)
word = st.text(st.sampled_from("ab-.:;<>=?é\u00a0€"), min_size=1, max_size=90) | st.sampled_from(
    ["x" * 200, "=?utf-8?q?x?=", "\u00e9" * 40]
)
spaced = (
    st.lists(st.tuples(white, word), max_size=25)
    .flatmap(lambda pairs: st.tuples(st.just(pairs), st.sampled_from(["", " ", "\t", " " * 100])))
    .map(lambda drawn: "".join(w + x for w, x in drawn[0]) + drawn[1])
)


@settings(max_examples=500, deadline=None)
@given(value=spaced | st.builds(lambda w: "hi" + w, white))
def test_folding_never_writes_a_white_space_line_and_unfolds_to_the_value(value: str) -> None:
    name = "X-Folded"
    if len(name) + 2 + encoded_length(value) > 998:
        return  # refused at enqueue (HeaderTooLong)
    written = unstructured(value)
    block = header_block([(name, written)]).decode("utf-8")
    assert block.endswith("\r\n") and block.count("\r\n\r\n") == 0
    first, *continuations = block[:-2].split("\r\n")
    assert first.startswith(f"{name}: ")
    for line in continuations:
        assert line[:1] in (" ", "\t"), line  # a fold, not a new field
        assert line.strip(" \t"), "a continuation line of only white space (obs-FWS)"
    assert all(len(line.encode()) <= 998 for line in (first, *continuations))
    # RFC 5322 2.2.3: unfolding removes each CRLF that white space follows, nothing else.
    assert re.sub(r"\r\n(?=[ \t])", "", block[:-2]) == f"{name}: {written}"
    parsed = email.message_from_bytes(block.encode() + b"\r\n", policy=email.policy.compat32)
    if value.isascii():
        assert re.sub(r"\r\n(?=[ \t])", "", parsed[name]) == value.lstrip(" \t")
    else:  # encoded words: decoders agree on the text, not on white space around the words
        decoded = email.message_from_bytes(block.encode() + b"\r\n", policy=email.policy.default)
        assert str(decoded[name]).split() == value.split()


def test_a_subject_of_trailing_spaces_stays_on_its_line() -> None:
    block = header_block([("Subject", "hi" + " " * 100)])
    assert block == b"Subject: hi" + b" " * 100 + b"\r\n"  # was "...\r\n      \r\n"


def test_the_producer_measures_a_value_as_the_worker_encodes_it() -> None:
    for value in ("plain", "é" * 400, "mixed é text " * 30, "€ \t x"):
        assert encoded_length(value) == len(unstructured(value))


def test_attachment_parts_are_written_by_us_and_read_back_exactly() -> None:
    names = ["invoice.pdf", "a b.txt", "=?utf-8?q?x=0D=0AX-Injected:_1?=", "é€" * 60, "%41.txt"]
    content = bytes(range(256)) * 5
    job = build_job(
        SETTINGS,
        {
            "to": "reader@example.com",
            "subject": "s",
            "text": "t",
            "html": "<p>t</p>",
            "attachments": [
                {"filename": n, "content_b64": base64.b64encode(content).decode()} for n in names
            ],
        },
    )
    data = build_envelope(job).data
    assert b"invoice.pdf" in data and b'filename="invoice.pdf"' in data
    assert b"filename*=utf-8''a%20b.txt" in data
    assert b"filename*0*=utf-8''" in data and b"filename*1*=" in data  # continuations
    assert b"=?utf-8?" not in data  # no encoded word, literal or decoded
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message.get_content_type() == "multipart/mixed"
    body, *attachments = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert [a.get_filename() for a in attachments] == names
    for part in attachments:
        assert part.defects == [] and "MIME-Version" not in part
        assert part.get_content_type() == "application/octet-stream"
        assert part.get_param("name") == part.get_filename()
        assert part.get_content() == content
    assert all(len(line) <= 78 for line in data.split(b"\r\n"))
    # Base64 in lines of 76 characters (RFC 2045 6.8), CRLF-terminated.
    lines = base64.b64encode(content).decode()
    wrapped = "".join(lines[i : i + 76] + "\r\n" for i in range(0, len(lines), 76))
    assert data.count(f"\r\n\r\n{wrapped}\r\n--".encode()) == len(names)
