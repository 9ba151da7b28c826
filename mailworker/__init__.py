"""mailworker: the email queue worker for Python apps.

    from mailworker import send_email, status

    job = send_email.delay(to="ann@example.com", subject="Hi", text="Hello")
    status(job.id)  # queued, sending, deferred, sent or failed, per recipient

Run workers with ``celery -A mailworker.worker worker`` (see the Procfile). This package is
the front door: each name is imported when first used, so importing one part (the delivery
core, the Redis state) never loads the others. The parts, from the ground up:

    mailworker.settings   the environment, read once into typed, frozen settings
    mailworker.store      every Redis key and record (jobs, ledgers, pauses, dead letters)
    mailworker.observe    Sentry, log formatting, address masking
    mailworker.delivery   the Celery-free core: message, SMTP sessions, limits, decisions
    mailworker.feedback   what comes back after the 250: bounces, complaints, auto-replies
    mailworker.tasks      the producer API and the Celery app
    mailworker.worker     the Celery worker process: task bodies, housekeeping, lifecycle, metrics
    mailworker.cli        the ``mailworker`` command
    mailworker.dev        a development SMTP server, a private Redis, the demo
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it.
_EXPORTS = {
    "MailworkerError": "mailworker.errors",
    "send_email": "mailworker.tasks.send",
    "status": "mailworker.store.status",
    "InvalidEmail": "mailworker.tasks.errors",
    "InvalidAddress": "mailworker.tasks.errors",
    "InvalidAttachment": "mailworker.tasks.errors",
    "HeaderInjection": "mailworker.tasks.errors",
    "MessageTooLarge": "mailworker.tasks.errors",
    "QueueUnavailable": "mailworker.tasks.errors",
    "UnknownAccount": "mailworker.tasks.errors",
    "SettingsError": "mailworker.settings.errors",
    "app": "mailworker.worker",
}
__all__ = [
    "HeaderInjection",
    "InvalidAddress",
    "InvalidAttachment",
    "InvalidEmail",
    "MailworkerError",
    "MessageTooLarge",
    "QueueUnavailable",
    "SettingsError",
    "UnknownAccount",
    "app",
    "send_email",
    "status",
]

if TYPE_CHECKING:
    from mailworker.errors import MailworkerError
    from mailworker.settings.errors import SettingsError
    from mailworker.store.status import status
    from mailworker.tasks.errors import (
        HeaderInjection,
        InvalidAddress,
        InvalidAttachment,
        InvalidEmail,
        MessageTooLarge,
        QueueUnavailable,
        UnknownAccount,
    )
    from mailworker.tasks.send import send_email
    from mailworker.worker import app


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'mailworker' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return list(__all__)
