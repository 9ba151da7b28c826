"""Provider events over HTTP: one framework-agnostic handler, one small module per provider.

A provider module offers ``read(body, headers) -> list[Report]``: it proves the request is
genuine (a signature, a shared secret) or raises :class:`Refused`, and turns the
provider's events into the same :class:`~mailworker.feedback.reports.Report` a bounce mail
gives, so :func:`handle` applies them exactly as the bounce mailbox does. A Django or Flask
view is three lines (docs/feedback.md, "Provider events"); SendGrid, Postmark or Mailgun
would each be one module with its own ``read``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from mailworker.feedback.apply import apply_report
from mailworker.feedback.reports import Report
from mailworker.feedback.sns import Refused
from mailworker.observe.sentry import init_sentry
from mailworker.settings import get_settings

log = logging.getLogger("mailworker.feedback")

__all__ = ["Provider", "Refused", "Response", "handle"]


class Provider(Protocol):
    name: str

    def read(self, body: bytes, headers: Mapping[str, str]) -> list[Report]: ...


@dataclass(frozen=True)
class Response:
    """What the view answers: 200 once applied, 403 for what is not genuine."""

    status: int
    body: str


def handle(provider: Provider, body: bytes, headers: Mapping[str, str] | None = None) -> Response:
    """Verify, read and apply one request's events. A 5xx makes the provider retry (Redis
    was down); applying twice repeats nothing."""
    init_sentry(get_settings())  # rate alerts (feedback.alerts); a no-op without SENTRY_DSN
    try:
        reports = provider.read(body, headers or {})
    except Refused as exc:
        log.warning("%s event refused: %s", provider.name, exc)
        return Response(403, f"refused: {exc}")
    applied = [a for report in reports for a in apply_report(report, provider.name)]
    return Response(200, f"ok: {len(applied)} recipient outcome(s)")
