"""Capture the mail an app sends, in the app's own tests: validated exactly as
``send_email.delay()`` validates, recorded instead of queued, rendered on demand.

    from mailworker.testing import capture_emails

    with capture_emails() as outbox:
        signup("zoe@example.com")          # calls send_email.delay(...) somewhere
    assert outbox[0].to == ["zoe@example.com"]
    assert "Welcome" in outbox[0].message["Subject"]

Only code running in the ``with`` block's context is captured (a context variable): a
real send from another thread of the same process still goes to Redis. Nothing touches
Redis or a worker while capturing; an invalid job raises at the call, as it would for real.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from functools import cached_property

from mailworker.delivery.message import build_message_bytes, envelope_sender
from mailworker.settings import get_settings
from mailworker.store.job import EmailJob
from mailworker.tasks.capture import RECORDER


@dataclass(frozen=True)
class CapturedEmail:
    """One job ``send_email`` would have queued."""

    job: EmailJob
    queue: str  # email, or email.high for priority="high"
    send_at: float | None

    @property
    def to(self) -> list[str]:
        """Every envelope recipient (To, Cc and Bcc), as the worker would send to them."""
        return list(self.job.recipients)

    @property
    def subject(self) -> str:
        return self.job.subject

    @cached_property
    def raw(self) -> bytes:
        """The message as the worker would write it (without DKIM)."""
        return build_message_bytes(self.job)

    @cached_property
    def message(self) -> EmailMessage:
        """The rendered message, parsed by Python's email package."""
        return email.message_from_bytes(self.raw, policy=email.policy.default)

    @property
    def envelope_sender(self) -> str:
        return envelope_sender(self.job, get_settings().feedback.return_path)


class Outbox(list[CapturedEmail]):
    """The captured mail, oldest first; a list, with a helper or two."""

    def to(self, address: str) -> list[CapturedEmail]:
        """The captured mail with ``address`` among its recipients."""
        return [mail for mail in self if address in mail.job.recipients]


@contextmanager
def capture_emails() -> Iterator[Outbox]:
    outbox = Outbox()

    def record(job: EmailJob, queue: str, send_at: float | None) -> None:
        outbox.append(CapturedEmail(job, queue, send_at))

    token = RECORDER.set(record)
    try:
        yield outbox
    finally:
        RECORDER.reset(token)
