"""Hostile input over the whole producer API, property-based.

Every keyword of ``send_email`` gets arbitrary strings, Unicode, control characters,
header and SMTP-command injections, line breaks at the end of or inside the value, RFC 2047
encoded words (file names, MIME types, header values), huge values, nested structures and
wrong types (strategies in tests/hostile.py). Each call either raises :class:`InvalidEmail`
(the documented error) or gives a job whose bytes on the wire add no header, no recipient
and no SMTP command, and parse, with no defect, to exactly the job; attachment file names
arrive as the literal names, RFC 2231-encoded unless plain ASCII. The end-to-end test sends
a sample through the real Redis, worker and SMTP server and checks what the server received.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mailworker.delivery.message import build_envelope
from mailworker.dev.devserver import DevServer, ReceivedMessage
from mailworker.settings import get_settings, load_settings
from mailworker.store.dead import show
from mailworker.store.job import Attachment, EmailJob
from mailworker.tasks import (
    HeaderInjection,
    HeaderTooLong,
    InvalidAttachment,
    InvalidEmail,
    send_email,
)
from mailworker.tasks.send import enqueue
from mailworker.tasks.validation import build_job
from tests.helpers import messages_of, wait_for_status
from tests.hostile import (
    OWN_HEADERS,
    addresses,
    anything,
    attachment,
    benign,
    broken,
    check_received,
    check_wire_bytes,
    good_address,
    good_header_name,
    header_name,
    header_value,
    hostile,
    hostile_text,
    leaning,
)

# Huge values make huge failure reports; hypothesis warns about that, pytest would fail on it.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

SETTINGS = load_settings(
    {
        "SMTP_URL": "smtps://u:p@h",
        "DEFAULT_FROM_EMAIL": "a@example.com",
        "MAX_MESSAGE_BYTES": "20000",
    }
)
arguments = st.fixed_dictionaries(
    {
        "to": addresses,
        "subject": leaning(hostile(benign), anything),
        "text": leaning(benign | broken(benign), st.one_of(hostile_text, anything)),
    },
    optional={
        "html": leaning(benign | broken(benign), st.one_of(hostile_text, anything)),
        "from_email": leaning(good_address, addresses),
        "cc": addresses,
        "bcc": addresses,
        "reply_to": addresses,
        "headers": leaning(
            st.dictionaries(header_name, header_value, max_size=3),
            st.one_of(
                st.dictionaries(good_header_name, benign, max_size=2),
                st.dictionaries(
                    st.one_of(st.text(max_size=12), st.integers(), st.none()),
                    hostile_text,
                    max_size=3,
                ),
                anything,
            ),
        ),
        "attachments": leaning(st.lists(attachment, max_size=2), anything),
        "account": leaning(st.just("default"), st.one_of(broken(st.just("default")), anything)),
        "idempotency_key": leaning(st.none(), st.one_of(hostile(benign), anything)),
        "tags": leaning(
            st.dictionaries(benign, benign, max_size=2),
            st.one_of(
                st.dictionaries(hostile(benign), hostile(benign), max_size=2),
                st.dictionaries(hostile_text, hostile_text, max_size=2),
                anything,
            ),
        ),
        "ignore_suppression": leaning(st.booleans(), anything),
    },
)


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
    check_received(envelope.data, job)
    for given_attachment, kept in zip(
        arguments.get("attachments") or (), job.attachments, strict=True
    ):
        assert kept.filename == given_attachment["filename"].strip()


# The fields that become headers of their own: everything else valid, so that most draws
# reach the message builder.
message_fields = st.fixed_dictionaries(
    {"to": st.just("ann@example.com"), "subject": hostile(benign), "text": benign},
    optional={
        "html": benign | broken(benign),
        "headers": st.dictionaries(header_name, header_value, max_size=3),
        "attachments": st.lists(attachment, max_size=3),
    },
)


@settings(max_examples=600, deadline=None)
@given(arguments=message_fields)
def test_file_names_mime_types_and_headers_are_refused_or_arrive_intact(
    arguments: dict[str, Any],
) -> None:
    try:
        job = build_job(SETTINGS, arguments)
    except InvalidEmail as exc:
        event(f"refused: {type(exc).__name__} {exc.field.split('[')[0]}")
        return
    event(f"accepted, {len(job.attachments)} attachments, {len(job.headers)} headers")
    check_received(build_envelope(job).data, job)


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
    check_received(message.data, job)


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


@pytest.mark.slow
@pytest.mark.usefixtures("celery_worker")
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(arguments=message_fields)
def test_file_names_mime_types_and_headers_through_the_worker_arrive_intact(
    starttls_server: DevServer, arguments: dict[str, Any]
) -> None:
    received = send_or_refuse(starttls_server, **arguments)
    if isinstance(received, InvalidEmail):
        return
    event("sent through the worker")
    check_received(received.data, build_job(get_settings(), arguments))


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
