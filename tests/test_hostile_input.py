"""Hostile input over the whole producer API, property-based.

Every keyword of ``send_email`` gets arbitrary strings, Unicode, control characters,
header and SMTP-command injections, huge values, nested structures and wrong types. Each
call either raises :class:`InvalidEmail` (the documented error) or gives a job whose bytes
on the wire add no header, no recipient and no SMTP command; attachment file names arrive
as plain names, RFC 2231-encoded when not ASCII. The second test sends a sample through the
real Redis, worker and SMTP server and checks what the server received.
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from settings import get_settings, load_settings
from tasks import HeaderInjection, HeaderTooLong, InvalidAttachment, InvalidEmail, send_email
from tasks.dead import show
from tasks.job import Attachment, EmailJob
from tasks.send import enqueue
from tasks.validation import build_job
from tests.helpers import messages_of, wait_for_status
from worker.devserver import DevServer, ReceivedMessage
from worker.message import build_envelope

# Huge values make huge failure reports; hypothesis warns about that, pytest would fail on it.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

SETTINGS = load_settings(
    {
        "SMTP_URL": "smtps://u:p@h",
        "DEFAULT_FROM_EMAIL": "a@example.com",
        "MAX_MESSAGE_BYTES": "20000",
    }
)
INJECTIONS = [
    "\r\nBcc: injected@evil.example",
    "\nBcc: injected@evil.example",
    "\rX-Injected: 1",
    "\r\n.\r\nMAIL FROM:<injected@evil.example>\r\nRCPT TO:<injected@evil.example>\r\nDATA\r\n",
    "\u2028X-Injected: 1",
    "\x00",
    "\x0bX-Injected: 1",
    "\x85X-Injected: 1",
    "=?utf-8?q?=0D=0ABcc:_injected@evil.example?=",
    "ann@example.com>, <injected@evil.example",
    "../../etc/passwd",
    "C:\\Windows\\win.ini",
    "\ud800",
]
hostile_text = st.one_of(
    st.text(),
    st.sampled_from(INJECTIONS),
    st.tuples(st.text(max_size=8), st.sampled_from(INJECTIONS)).map("".join),
    st.integers(1000, 30_000).map(lambda n: "A" * n),  # over MAX_MESSAGE_BYTES,
)
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | hostile_text | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
benign = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30)


def leaning(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly values that pass, so the accepted side is explored too; a quarter hostile."""
    return st.integers(0, 3).flatmap(lambda roll: bad if roll == 0 else good)


good_address = st.one_of(
    st.emails(),
    st.sampled_from(["Ann <ann@example.com>", "bob@example.com", "Zoë <zoe@bücher.example>"]),
    st.builds(lambda name: f'"{name}" <ann@example.com>', benign),
)
address = leaning(
    good_address,
    st.one_of(
        hostile_text,
        st.tuples(st.sampled_from(["ann@example.com", "Ann <ann@example.com>"]), hostile_text).map(
            "".join
        ),
    ),
)
addresses = leaning(st.one_of(address, st.lists(address, max_size=3)), anything)
attachment = st.fixed_dictionaries(
    {
        "filename": leaning(
            st.sampled_from(["résumé.pdf", "a b.txt", 'q"uote;.txt']) | benign, hostile_text
        ),
        "content_b64": leaning(st.just("aGVsbG8="), hostile_text),
    },
    optional={"mimetype": leaning(st.just("text/plain"), hostile_text)},
)
arguments = st.fixed_dictionaries(
    {
        "to": addresses,
        "subject": leaning(benign, st.one_of(hostile_text, anything)),
        "text": leaning(benign, st.one_of(hostile_text, anything)),
    },
    optional={
        "html": leaning(benign, st.one_of(hostile_text, anything)),
        "from_email": leaning(good_address, addresses),
        "cc": addresses,
        "bcc": addresses,
        "reply_to": addresses,
        "headers": leaning(
            st.dictionaries(
                st.from_regex(r"X-[A-Za-z-]{1,10}", fullmatch=True), benign, max_size=2
            ),
            st.one_of(
                st.dictionaries(
                    st.one_of(st.text(max_size=12), st.integers(), st.none()),
                    hostile_text,
                    max_size=3,
                ),
                anything,
            ),
        ),
        "attachments": leaning(st.lists(attachment, max_size=2), anything),
        "account": leaning(st.just("default"), st.one_of(hostile_text, anything)),
        "idempotency_key": leaning(st.none(), st.one_of(hostile_text, anything)),
        "tags": leaning(
            st.dictionaries(benign, benign, max_size=2),
            st.one_of(st.dictionaries(hostile_text, hostile_text, max_size=2), anything),
        ),
        "ignore_suppression": leaning(st.booleans(), anything),
    },
)
# Header lines mailworker writes; a caller's own headers are added per job.
OWN_HEADERS = {
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
}
SMTP_VERBS = (b"MAIL ", b"RCPT ", b"DATA", b"RSET", b"QUIT", b"AUTH ", b"EHLO ", b"HELO ")


def check_wire_bytes(data: bytes, allowed_headers: set[str]) -> None:
    """No header, no line break and no SMTP command the job did not ask for."""
    assert b"\r" not in data.replace(b"\r\n", b"") and b"\n" not in data.replace(b"\r\n", b"")
    assert b"\x00" not in data
    parsed = email.message_from_bytes(data, policy=email.policy.SMTP)
    for part in parsed.walk():
        header_block = part.as_bytes().split(b"\r\n\r\n", 1)[0]
        for line in header_block.split(b"\r\n"):
            assert not line.upper().startswith(SMTP_VERBS), line
        names = {name.lower() for name in part.keys()}
        assert names <= allowed_headers, names - allowed_headers
        assert "injected" not in str(part.get("bcc", "")) and "bcc" not in names
        filename = part.get_filename()
        if filename is not None:
            assert not any(c in filename for c in "/\\\r\n\x00") and filename not in (".", "..")
    recipients = ",".join(str(parsed.get(h, "")) for h in ("to", "cc", "reply-to"))
    assert "injected@evil.example" not in recipients


@settings(max_examples=600, deadline=None)
@given(arguments=arguments)
def test_every_call_is_refused_with_invalid_email_or_sends_only_what_was_asked(
    arguments: dict[str, Any],
) -> None:
    try:
        job = build_job(SETTINGS, arguments)
    except InvalidEmail as exc:
        assert exc.field and exc.problem  # says which argument and why
        event(f"refused: {exc.field.split('[')[0]}")
        return
    event("accepted")
    envelope = build_envelope(job)
    assert "injected@evil.example" not in envelope.recipients
    assert envelope.sender == job.from_email[1] and "\n" not in envelope.sender
    check_wire_bytes(envelope.data, OWN_HEADERS | {name.lower() for name, _ in job.headers})
    for given_attachment, kept in zip(
        arguments.get("attachments") or (), job.attachments, strict=True
    ):
        assert kept.filename == given_attachment["filename"]


def test_a_non_ascii_attachment_name_is_rfc_2231_encoded() -> None:
    job = build_job(
        SETTINGS,
        {
            "to": "ann@example.com",
            "subject": "s",
            "text": "t",
            "attachments": [{"filename": 'résumé "final";x=1.pdf', "content_b64": "aGk="}],
        },
    )
    data = build_envelope(job).data
    assert b"filename*=utf-8''r%C3%A9sum%C3%A9%20%22final%22%3Bx%3D1.pdf" in data
    for name in ("../x.pdf", "a\\b.pdf", "..", "x\r\nBcc: y@example.com"):
        attachment = {"filename": name, "content_b64": "aGk="}
        with pytest.raises(InvalidEmail):
            build_job(
                SETTINGS,
                {"to": "a@example.com", "subject": "s", "text": "t"}
                | {"attachments": [attachment]},
            )


@pytest.mark.slow
@pytest.mark.usefixtures("celery_worker")
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(arguments=arguments)
def test_hostile_calls_through_redis_and_the_worker_deliver_only_what_was_asked(
    starttls_server: DevServer, arguments: dict[str, Any]
) -> None:
    # One account, and no idempotency key: a key drawn twice would return the first job.
    arguments = {**arguments, "account": "default"}
    arguments.pop("idempotency_key", None)
    try:
        result = send_email.delay(**arguments)
    except InvalidEmail:
        return
    event("sent through the worker")
    record = wait_for_status(result.id, "sent", "failed", timeout=30)
    job = build_job(get_settings(), arguments)
    received = messages_of(starttls_server, result.id)
    if record["state"] == "failed":  # e.g. the server refused it; never a crash
        assert "error" in record and received == []
        return
    [message] = received
    assert set(message.rcpt_tos) == set(job.recipients)
    check_wire_bytes(message.data, OWN_HEADERS | {name.lower() for name, _ in job.headers})


def _unfold(value: str) -> str:
    """RFC 5322 2.2.3: a CRLF followed by white space is removed, nothing else."""
    return re.sub(r"\r?\n(?=[ \t])", "", value)


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")


def _top_headers(job: EmailJob, *, multipart: bool) -> list[str]:
    names = ["from", "subject", "date", "message-id", "mime-version", "content-type"]
    names += [
        n for n, boxes in (("to", job.to), ("cc", job.cc), ("reply-to", job.reply_to)) if boxes
    ]
    names += [] if multipart else ["content-transfer-encoding"]
    return sorted(names + [name.lower() for name, _ in job.headers])


def check_received(data: bytes, job: EmailJob) -> None:
    """What a client parses from ``data`` is exactly the job: Python's email parser finds no
    defect, the top-level header block holds our headers and the caller's and no other,
    each caller value comes back unfolded as given, and every part has its own headers and
    no other, with the body or attachment, file name and type the caller gave."""
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    raw = email.message_from_bytes(data, policy=email.policy.compat32)  # values undecoded
    for part in parsed.walk():
        assert part.defects == [], (part.get_content_type(), part.defects)
    assert sorted(n.lower() for n in parsed.keys()) == _top_headers(
        job, multipart=parsed.is_multipart()
    )
    for name, value in (("Subject", job.subject), *job.headers):
        if value.isascii():  # written as given, only folded
            assert _unfold(raw[name]) == value.lstrip(" \t"), name
        else:  # RFC 2047-encoded; decoders differ only in white space around encoded words
            assert str(parsed[name]).split() == value.split(), name
    leaves = [part for part in parsed.walk() if not part.is_multipart()]
    bodies = [(job.text, "text/plain"), (job.html, "text/html")]
    bodies = [(content, kind) for content, kind in bodies if content is not None]
    assert len(leaves) == len(bodies) + len(job.attachments)
    for part, (content, kind) in zip(leaves, bodies, strict=False):
        assert part.get_content_type() == kind and part.get_content_disposition() is None
        assert _lines(part.get_content()) == _lines(content)
        if part is not parsed:
            assert sorted(part.keys()) == ["Content-Transfer-Encoding", "Content-Type"]
    for part, attachment in zip(leaves[len(bodies) :], job.attachments, strict=True):
        assert sorted(part.keys()) == [
            "Content-Disposition",
            "Content-Transfer-Encoding",
            "Content-Type",
        ]
        assert part.get_content_type() == attachment.mimetype.lower()
        assert part.get_content_disposition() == "attachment"
        assert part.get_filename() == attachment.filename
        assert part.get_payload(decode=True) == base64.b64decode(attachment.content_b64)


def send_or_refuse(server: DevServer, **arguments: Any) -> InvalidEmail | ReceivedMessage:
    """Refused by the producer, or sent by the real worker and received by ``server``."""
    try:
        result = send_email.delay(**arguments)
    except InvalidEmail as exc:
        return exc
    record = wait_for_status(result.id, "sent", "failed")
    assert record["state"] == "sent", record
    [received] = messages_of(server, result.id)
    return received


@pytest.mark.usefixtures("celery_worker")
@pytest.mark.parametrize(
    ("extra", "refusal", "field"),
    [
        ({"headers": {"X-Campaign\n": "v"}}, HeaderInjection, "headers"),
        ({"headers": {"X-Campaign\r\n": "v"}}, HeaderInjection, "headers"),
        ({"headers": {"X-" + "a" * 997: "v"}}, HeaderTooLong, "headers"),
        ({"headers": {"X-Ünicode": "v"}}, HeaderInjection, "headers"),
        ({"headers": {"X-Long": "v" * 991}}, HeaderTooLong, "headers['X-Long']"),
        ({"subject": "é" * 400}, HeaderTooLong, "subject"),
        (
            {
                "attachments": [
                    {"filename": "a.txt", "content_b64": "aGk=", "mimetype": "text/plain\n"}
                ]
            },
            InvalidAttachment,
            "attachments[0]",
        ),
        (
            {"attachments": [{"filename": "a.txt\n", "content_b64": "aGk="}]},
            HeaderInjection,
            "attachments[0].filename",
        ),
        (
            {
                "attachments": [
                    {"filename": "a.txt", "content_b64": "aGk=", "mimetype": "text/plaín"}
                ]
            },
            InvalidAttachment,
            "attachments[0]",
        ),
    ],
)
def test_a_trailing_newline_or_an_overlong_header_is_refused_by_the_producer(
    starttls_server: DevServer, extra: dict[str, Any], refusal: type[InvalidEmail], field: str
) -> None:
    arguments = {"to": "ann@example.com", "subject": "s", "text": "t", **extra}
    outcome = send_or_refuse(starttls_server, **arguments)
    assert isinstance(outcome, refusal), (
        outcome.data if isinstance(outcome, ReceivedMessage) else outcome
    )
    assert outcome.field == field


PDF_B64 = base64.b64encode(b"%PDF-1.4 tiny").decode()
# Encoded words that the stdlib's add_attachment decoded into the quoted file name and
# wrote back with their CR and LF raw: a header of the caller's in the attachment part, or
# the end of its header block and caller text in its content.
ENCODED_WORD_FILE_NAMES = [
    "=?utf-8?q?invoice.pdf=22=0D=0AX-Injected:_1?=",
    "=?utf-8?q?invoice.pdf=22=0D=0A=0D=0Acaller_text?=",
    "=?utf-8?b?aW52b2ljZS5wZGYiDQpYLUluamVjdGVkOiAx?=",
    "=?utf-8?q?invoice.pdf?=",
]


@pytest.mark.usefixtures("celery_worker")
@pytest.mark.parametrize("filename", ENCODED_WORD_FILE_NAMES)
def test_an_encoded_word_in_a_file_name_arrives_as_the_literal_name(
    starttls_server: DevServer, filename: str
) -> None:
    arguments = {
        "to": "ann@example.com",
        "subject": "Your invoice",
        "text": "Attached.",
        "attachments": [
            {"filename": filename, "mimetype": "application/pdf", "content_b64": PDF_B64}
        ],
    }
    received = send_or_refuse(starttls_server, **arguments)
    assert isinstance(received, ReceivedMessage), received
    assert b"X-Injected" not in received.data.replace(b"X-Injected:_1", b"")
    check_received(received.data, build_job(get_settings(), arguments))


@pytest.mark.usefixtures("celery_worker")
@pytest.mark.parametrize(
    "changes",
    [
        {"headers": (("X-Campaign\n", "v"),)},
        {"headers": (("X-Campaign", "v\r\nBcc: injected@evil.example"),)},
        {"headers": (("X-Campaign", "v\n\nbody"),)},
        {"subject": "hi\rX-Injected: 1"},
        {"attachments": (Attachment("a.txt", "aGk=", "text/plain\n"),)},
        {"attachments": (Attachment("a.txt", "aGk=", "text/plain\r\n\r\nX"),)},
    ],
)
def test_a_job_that_skipped_validation_is_dead_lettered_not_sent_broken(
    starttls_server: DevServer, changes: dict[str, Any]
) -> None:
    """A job from an older producer, or written to Redis by hand: the worker's last check of
    every header block it generated refuses it (dead letter "unbuildable")."""
    job = EmailJob(
        id=str(uuid.uuid4()),
        account="default",
        from_email=("", "app@example.com"),
        to=(("", "ann@example.com"),),
        subject="s",
        text="t",
    )
    fields = {**job.__dict__, **changes}
    job = EmailJob(**fields)
    enqueue(job)
    record = wait_for_status(job.id, "sent", "failed")
    assert record["state"] == "failed", messages_of(starttls_server, job.id)[0].data
    assert record["error"] == "message could not be built: UnsafeHeaderBlock"
    assert show(job.id) is not None
    assert messages_of(starttls_server, job.id) == []
