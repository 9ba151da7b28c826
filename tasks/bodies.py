"""What a task runs is the worker's business.

The producer defines the Celery tasks (their names, queues and validation); the worker
process provides their bodies when :mod:`mailworker.worker` is imported (``celery -A
mailworker.worker worker``). So the producer never imports the worker, and a process that
only produces never loads aiosmtplib or the delivery core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mailworker.errors import MailworkerError

Body = Callable[..., dict[str, Any]]
_bodies: dict[str, Body] = {}


class NotAWorker(MailworkerError, RuntimeError):
    """A mailworker task ran in a process that is not a mailworker worker."""


def provide(task_name: str, body: Body) -> None:
    """Called by the worker package: ``body(task, *args, **kwargs)`` runs ``task_name``."""
    _bodies[task_name] = body


def run(task_name: str, task: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        body = _bodies[task_name]
    except KeyError:
        raise NotAWorker(
            f"{task_name} runs only in a mailworker worker: start one with "
            "`celery -A mailworker.worker worker` (see the Procfile)"
        ) from None
    return body(task, *args, **kwargs)
