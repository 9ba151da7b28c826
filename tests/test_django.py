"""Django's own mail API through mailworker's backend, with a real Django settings module."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from worker.devserver import DevServer, ReceivedMessage

django = pytest.importorskip("django")


def arrived(server: DevServer, *addresses: str, timeout: float = 20) -> dict[str, ReceivedMessage]:
    """The message each of ``addresses`` received, once all have arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        received = {r: m for m in server.messages for r in m.rcpt_tos}
        if all(address in received for address in addresses):
            return received
        time.sleep(0.05)
    raise AssertionError(f"not all of {addresses} arrived")


@pytest.fixture(scope="module")
def django_settings() -> Iterator[None]:
    # Set for this module only: worker processes spawned by later tests must not inherit it.
    saved = os.environ.get("DJANGO_SETTINGS_MODULE")
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.django_project.settings"
    django.setup()
    yield
    if saved is None:
        del os.environ["DJANGO_SETTINGS_MODULE"]
    else:
        os.environ["DJANGO_SETTINGS_MODULE"] = saved


def test_send_mail_and_alternatives_with_attachments_go_through_the_queue(
    django_settings: None, starttls_server: DevServer, celery_worker: Any
) -> None:
    from django.core import mail

    from tasks.django import EmailBackend

    assert isinstance(mail.get_connection(), EmailBackend)
    assert mail.send_mail("Plain", "Plain body", None, ["dj-plain@example.com"]) == 1
    message = mail.EmailMultiAlternatives(
        "Receipt",
        "Thanks for your order.",
        "Orders <orders@example.com>",
        ["dj-rich@example.com"],
        cc=["dj-cc@example.com"],
        bcc=["dj-bcc@example.com"],
        reply_to=["help@example.com"],
        headers={"X-Order": "42"},
    )
    message.attach_alternative("<p>Thanks for your <b>order</b>.</p>", "text/html")
    message.attach("receipt.pdf", b"%PDF-1.4 fake", "application/pdf")
    assert message.send() == 1

    received = arrived(starttls_server, "dj-plain@example.com", "dj-rich@example.com")
    plain = received["dj-plain@example.com"].message
    assert plain["Subject"] == "Plain" and plain["From"] == "Shop <shop@example.com>"
    rich = received["dj-rich@example.com"]
    assert sorted(rich.rcpt_tos) == [f"dj-{n}@example.com" for n in ("bcc", "cc", "rich")]
    parsed = rich.message
    assert parsed["Reply-To"] == "help@example.com" and parsed["X-Order"] == "42"
    assert "Bcc" not in parsed
    assert "<b>order</b>" in parsed.get_body(("html",)).get_content()
    [attachment] = list(parsed.iter_attachments())
    assert attachment.get_filename() == "receipt.pdf"
    assert attachment.get_content() == b"%PDF-1.4 fake"


def test_invalid_addresses_fail_at_send_unless_silenced(django_settings: None) -> None:
    from django.core import mail

    from tasks import InvalidEmail

    with pytest.raises(InvalidEmail):
        mail.send_mail("Hi", "body", None, ["not an address"])
    assert mail.send_mail("Hi", "body", None, ["not an address"], fail_silently=True) == 0
