"""Failures to Sentry: grouped per account and failure, with no personal data or secrets.

Initialised when ``SENTRY_DSN`` is set: in every worker at start-up, and in a producer the
first time it calls ``send_email.delay()``. An application that initialised sentry-sdk
itself keeps its own set-up (we never re-initialise an active client).

What is reported, each once: a job dead-lettered, an account paused, an account that has
failed transiently for longer than ``SENTRY_FAILING_AFTER_SECONDS``, and (through the Celery
integration) a crash inside the worker. Transient failures that will be retried are not.

Events are fingerprinted ``mailworker / account / failure / SMTP code``, so a thousand
refused messages make one Sentry issue, and tagged account, smtp_code, enhanced_code, queue,
campaign, attempt; ``job_id`` rides along for ``mailworker status`` / ``dead show``.

Every event and breadcrumb passes :func:`scrub`: e-mail addresses become ``[email]``, the
passwords, client secrets and OAuth tokens mailworker knows become ``[secret]``, and fields
that carry message content (subject, bodies, recipients, task arguments) are dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.logging import LoggingIntegration

from settings import Settings
from tasks.redact import mask_addresses

# Keys whose values are message content or carry it (Celery's task arguments do).
_CONTENT_KEYS = {
    "args",
    "attachments",
    "bcc",
    "body",
    "cc",
    "data",
    "from_email",
    "headers",
    "html",
    "job",
    "kwargs",
    "payload",
    "recipients",
    "reply_to",
    "subject",
    "text",
    "to",
}
_lock = threading.Lock()
_secrets: set[str] = set()
_initialised = False


def init_sentry(settings: Settings) -> bool:
    """Start reporting to ``SENTRY_DSN``; a no-op without one or if already running."""
    global _initialised
    if _initialised or not settings.sentry_dsn:
        return _initialised
    with _lock:
        for account in settings.accounts.values():
            if account.password is not None:
                _secrets.add(account.password.get_secret_value())
        redis_password = urlsplit(settings.redis_url).password
        if redis_password:
            _secrets.add(redis_password)
        if settings.unsubscribe.secret is not None:
            _secrets.add(settings.unsubscribe.secret.get_secret_value())
        if _initialised or sentry_sdk.get_client().is_active():
            return _initialised
        sentry_sdk.init(
            dsn=settings.sentry_dsn,
            send_default_pii=False,
            include_local_variables=False,
            include_source_context=False,
            max_request_body_size="never",
            before_send=scrub,
            before_breadcrumb=scrub_breadcrumb,
            integrations=[
                CeleryIntegration(),
                # Log records become breadcrumbs only: events are sent on purpose, below.
                LoggingIntegration(level=logging.INFO, event_level=None),
            ],
        )
        _initialised = True
        return True


def remember_secret(value: str) -> None:
    """Register a secret (e.g. a fresh OAuth token) to be masked in every event."""
    if value:
        with _lock:
            _secrets.add(value)


def report(
    failure: str,
    message: str,
    *,
    account: str,
    job_id: str | None = None,
    smtp_code: int | None = None,
    enhanced_code: str | None = None,
    queue: str | None = None,
    campaign: str | None = None,
    attempt: int | None = None,
    level: str = "error",
) -> None:
    """Send one grouped event (a no-op when Sentry is not initialised)."""
    if not sentry_sdk.get_client().is_active():
        return
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = ["mailworker", account, failure, str(smtp_code or "-")]
        tags = {
            "account": account,
            "failure": failure,
            "smtp_code": smtp_code,
            "enhanced_code": enhanced_code,
            "queue": queue,
            "campaign": campaign,
            "attempt": attempt,
        }
        for key, value in tags.items():
            if value is not None:
                scope.set_tag(key, str(value))
        if job_id is not None:
            scope.set_extra("job_id", job_id)
            scope.set_extra("inspect", f"mailworker status {job_id}")
        sentry_sdk.capture_message(message, level=level)  # type: ignore[arg-type]


def scrub(event: Any, _hint: Any = None) -> Any:
    """``before_send``: the whole event, minus addresses, secrets and message content."""
    return _clean(event)


def scrub_breadcrumb(crumb: Any, _hint: Any = None) -> Any:
    return _clean(crumb)


def _clean(value: Any, key: str | None = None) -> Any:
    if key is not None and key.lower() in _CONTENT_KEYS:
        return "[removed]"
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, Mapping):
        return {k: _clean(v, k if isinstance(k, str) else None) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _clean_text(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[secret]")
    return mask_addresses(text)
