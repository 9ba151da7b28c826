"""Test helpers for apps that send mail with mailworker, and a pytest plugin.

    from mailworker.testing import capture_emails

    def test_signup_sends_a_welcome():
        with capture_emails() as outbox:
            signup("zoe@example.com")
        [welcome] = outbox
        assert welcome.to == ["zoe@example.com"]
        assert welcome.message.get_body(("plain",)).get_content().startswith("Welcome")

or, with pytest (registered through the ``pytest11`` entry point; nothing to import), the
``captured_emails`` fixture: the same outbox for the length of one test. Capturing
validates exactly like ``send_email.delay()`` and records instead of queuing: no Redis, no
worker. The implementation is :mod:`mailworker.dev.capture`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    import pytest
except ImportError:  # capture_emails works without pytest; the fixture needs it
    pytest = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from mailworker.dev.capture import CapturedEmail, Outbox

__all__ = ["CapturedEmail", "Outbox", "capture_emails", "captured_emails"]


def capture_emails() -> Any:
    """A context manager: the mail sent inside it, captured (see the module's example)."""
    from mailworker.dev.capture import capture_emails as capture

    return capture()


def __getattr__(name: str) -> Any:
    if name in ("CapturedEmail", "Outbox"):
        from mailworker.dev import capture

        return getattr(capture, name)
    raise AttributeError(name)


def captured_emails() -> Iterator[Outbox]:
    """The mail the test sends through ``send_email`` (or the Django backend), captured."""
    with capture_emails() as outbox:
        yield outbox


if pytest is not None:
    captured_emails = pytest.fixture(captured_emails)
