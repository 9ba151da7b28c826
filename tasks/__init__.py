"""mailworker's producer API.

from tasks import send_email
result = send_email.delay(to="ann@example.com", subject="Hi", text="Hello")
result.id  # the job id: `mailworker status <id>`
"""

from tasks import campaign  # noqa: F401  (registers the campaign batch task)
from tasks.app import app
from tasks.errors import (
    HeaderInjection,
    HeaderTooLong,
    InvalidAddress,
    InvalidAttachment,
    InvalidEmail,
    MessageTooLarge,
    QueueUnavailable,
    UnknownAccount,
)
from tasks.send import send_email
from tasks.status import status

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
