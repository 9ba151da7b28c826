"""mailworker's producer API and the Celery app: what an app imports to send mail.

Owns validation, publishing, campaigns, unsubscribe links, the Django backend and the task
definitions (the worker provides their bodies, see :mod:`.bodies`). May import settings,
store and observe; never the delivery core or the worker, so a producer loads no aiosmtplib.

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
