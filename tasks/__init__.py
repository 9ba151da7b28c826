"""mailworker's producer API.

from mailworker.tasks import send_email
result = send_email.delay(to="ann@example.com", subject="Hi", text="Hello")
result.id  # the job id: `mailworker status <id>`
"""

from mailworker.store.status import status
from mailworker.tasks import campaign  # noqa: F401  (registers the campaign batch task)
from mailworker.tasks.app import app
from mailworker.tasks.errors import (
    HeaderInjection,
    HeaderTooLong,
    InvalidAddress,
    InvalidAttachment,
    InvalidEmail,
    MessageTooLarge,
    QueueUnavailable,
    UnknownAccount,
)
from mailworker.tasks.send import send_email

__all__ = [
    "HeaderInjection",
    "HeaderTooLong",
    "InvalidAddress",
    "InvalidAttachment",
    "InvalidEmail",
    "MessageTooLarge",
    "QueueUnavailable",
    "UnknownAccount",
    "app",
    "send_email",
    "status",
]
