"""send_email.delay() → Redis → Celery worker → TLS + AUTH SMTP server, for real."""

from __future__ import annotations

import base64

import pytest

from mailworker.dev.devserver import DevServer
from mailworker.tasks import send_email
from tests.conftest import USER
from tests.helpers import messages_of, wait_for_status

pytestmark = pytest.mark.usefixtures("celery_worker")

PDF = b"%PDF-1.4 tiny but real bytes \x00\x01\x02"


@pytest.mark.parametrize(
    ("account", "server_fixture"), [("default", "starttls_server"), ("implicit", "implicit_server")]
)
def test_message_arrives_with_headers_body_attachment_and_hidden_bcc(
    account: str, server_fixture: str, request: pytest.FixtureRequest
) -> None:
    server: DevServer = request.getfixturevalue(server_fixture)
    result = send_email.delay(
        to=["Ann <ann@example.com>"],
        cc="carl@example.com",
        bcc=["secret-bcc@example.com"],
        reply_to="support@example.com",
        subject="Your invoice",
        text="Hello Ann,\nyour invoice is attached.",
        html="<p>Hello <b>Ann</b></p>",
        headers={"X-Campaign": "march"},
        attachments=[
            {
                "filename": "invoice.pdf",
                "mimetype": "application/pdf",
                "content_b64": base64.b64encode(PDF).decode(),
            }
        ],
        account=account,
    )
    assert wait_for_status(result.id, "sent", "failed")["state"] == "sent"

    [received] = messages_of(server, result.id)
    assert received.tls and received.user == USER  # AUTH happened, over TLS
    assert set(received.rcpt_tos) == {
        "ann@example.com",
        "carl@example.com",
        "secret-bcc@example.com",
    }
    message = received.message
    assert message["To"] == "Ann <ann@example.com>"
    assert message["Cc"] == "carl@example.com"
    assert message["Reply-To"] == "support@example.com"
    assert message["Subject"] == "Your invoice"
    assert message["X-Campaign"] == "march"
    assert message["Message-ID"] == f"<{result.id}@example.com>"
    assert message["Date"]
    assert "Bcc" not in message and b"secret-bcc" not in received.data
    assert message.get_body(("plain",)).get_content().startswith("Hello Ann,")
    assert "<b>Ann</b>" in message.get_body(("html",)).get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "invoice.pdf"
    assert attachment.get_content() == PDF


def test_internationalised_addresses_are_delivered(starttls_server: DevServer) -> None:
    result = send_email.delay(
        to=['"Jörg Ü" <jörg@bücher.example>', "ann@bücher.example"],
        subject="Grüße",
        text="Schöne Grüße",
    )
    assert wait_for_status(result.id, "sent", "failed")["state"] == "sent"
    [received] = messages_of(starttls_server, result.id)
    # The UTF-8 local part needs SMTPUTF8; the IDN domain travels as punycode.
    assert set(received.rcpt_tos) == {"jörg@xn--bcher-kva.example", "ann@xn--bcher-kva.example"}
    assert received.message["Subject"] == "Grüße"
    assert received.message.get_content().strip() == "Schöne Grüße"


def test_job_id_is_the_celery_task_id_and_status_is_readable(starttls_server: DevServer) -> None:
    result = send_email.delay(to="ann@example.com", subject="Hi", text="Hi")
    record = wait_for_status(result.id, "sent")
    assert record["recipients"] == {"ann@example.com": "sent"}
    assert record["attempt"] == 1
