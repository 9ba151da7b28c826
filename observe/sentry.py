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
passwords, client secrets, OAuth tokens and DKIM keys mailworker knows become ``[secret]``
(passwords both as written in their URL and decoded; keys by line too), and fields
that carry message content (subject, bodies, recipients, task arguments) are dropped.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration

from mailworker.observe.redact import mask_addresses
from mailworker.settings import Settings

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
        _secrets.update(known_secrets(settings))
        if _initialised or sentry_sdk.get_client().is_active():
            return _initialised
        # Imported here: it loads Celery, which the delivery core never needs.
        from sentry_sdk.integrations.celery import CeleryIntegration

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


def known_secrets(settings: Settings) -> set[str]:
    """Every secret in ``settings``, in each form it may take in text: passwords as used
    (decoded) and as written in their URL (percent-encoded), DKIM keys whole and by line."""
    found: set[str] = set()
    for account in settings.accounts.values():
        if account.password is not None:
            found |= _both_forms(account.password.get_secret_value())
    for password in _redis_passwords(settings.redis_url):
        found |= _both_forms(password)
    for password in _redis_passwords(settings.events.broker_url or ""):
        found |= _both_forms(password)
    mailbox = settings.feedback.mailbox
    if mailbox is not None and mailbox.password is not None:
        found |= _both_forms(mailbox.password.get_secret_value())
    if settings.unsubscribe.secret is not None:
        found.add(settings.unsubscribe.secret.get_secret_value())
    for key in settings.dkim.values():
        found |= _key_texts(key.private_key.get_secret_value())
    return {secret for secret in found if secret}


def _both_forms(password: str) -> set[str]:
    decoded = unquote(password)
    return {password, decoded, quote(decoded, safe=""), quote(decoded)}


def _redis_passwords(url: str) -> list[str]:
    if url.startswith("sentinel://"):
        parts = [urlsplit(part) for part in url.split(";")]
    else:
        parts = [urlsplit(url)]
    passwords = [p.password for p in parts if p.password]
    for part in parts:  # unix:///run/redis.sock?password=... and friends
        passwords += parse_qs(part.query).get("password", [])
    return passwords


def _key_texts(private_key: bytes) -> set[str]:
    """A DKIM private key as we hold it and as PKCS#8 PEM (how it is usually written),
    whole, as one line of base64 and line by line: a partial leak is masked too."""
    texts = {private_key.decode(), _pkcs8(private_key)}
    for text in list(texts):
        lines = [line for line in text.splitlines() if not line.startswith("-----")]
        texts.add("".join(lines))
        texts |= {line for line in lines if len(line) >= 16}
    return texts


def _pkcs8(private_key: bytes) -> str:
    """The PKCS#8 PEM of a key held as PKCS#1 PEM (RSA) or as a base64 seed (Ed25519)."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ed25519

    try:
        if private_key.startswith(b"-----BEGIN"):
            key: Any = ser.load_pem_private_key(private_key, password=None)
        else:
            key = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(private_key))
        return key.private_bytes(
            ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()
        ).decode()
    except (ValueError, TypeError):
        return ""


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
    # Longest first: a whole key before its lines, a decoded password before a part of it.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "[secret]")
    return mask_addresses(text)
