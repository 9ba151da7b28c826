"""The capture fixture, used the way an app's own test suite would use it: the app
(tests/shop_app.py) calls ``send_email.delay()``; its tests read what it sent."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mailworker import InvalidAddress, send_email, status
from mailworker.dev.devserver import DevServer
from mailworker.testing import Outbox, capture_emails
from tests import shop_app
from tests.helpers import wait_for_status

# The app's settings (SMTP_URL, DEFAULT_FROM_EMAIL): validation checks them, as for real.
pytestmark = pytest.mark.usefixtures("environment")


def test_the_fixture_captures_what_the_app_sends(captured_emails: Outbox) -> None:
    """``captured_emails`` comes from the pytest11 entry point: nothing imported it here."""
    job_id = shop_app.reset_password("ann@example.com", "123456")
    [mail] = captured_emails
    assert (mail.job.id, mail.to, mail.queue) == (job_id, ["ann@example.com"], "email.high")
    assert mail.subject == "Your reset code" and dict(mail.job.tags) == {"kind": "reset"}
    assert mail.job.expires_at is not None
    assert mail.message.get_body(("plain",)).get_content().strip() == "Your code is 123456."
    assert "<b>123456</b>" in mail.message.get_body(("html",)).get_content()
    assert status(job_id) is None  # nothing reached Redis


def test_the_rendered_message_is_what_the_worker_would_send(captured_emails: Outbox) -> None:
    shop_app.welcome("Zoë", "zoe@example.com")
    [mail] = captured_emails.to("zoe@example.com")
    sender = mail.message["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Zoë's Shop", "shop@example.com")
    assert mail.message["To"].addresses[0].display_name == "Zoë"
    assert mail.message["Message-ID"] == f"<{mail.job.id}@example.com>"


def test_bad_input_raises_as_it_would_for_real(captured_emails: Outbox) -> None:
    with pytest.raises(InvalidAddress):
        shop_app.welcome("Ann", "not an address")
    assert captured_emails == []


def test_capturing_leaves_real_sends_of_the_same_process_alone(
    celery_worker: Any, starttls_server: DevServer
) -> None:
    real: list[str] = []

    def send_for_real() -> None:
        real.append(send_email.delay(to="real@example.com", subject="real", text="x").id)

    with capture_emails() as outbox:
        elsewhere = threading.Thread(target=send_for_real)
        elsewhere.start()
        elsewhere.join(10)
        shop_app.reset_password("ann@example.com", "999999")
    assert [m.to for m in outbox] == [["ann@example.com"]]
    wait_for_status(real[0], "sent")
    after = send_email.delay(to="after@example.com", subject="after", text="x")
    wait_for_status(after.id, "sent")
    assert not any(b"999999" in m.data for m in starttls_server.messages)
