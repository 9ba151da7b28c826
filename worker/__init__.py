"""mailworker's worker: ``celery -A worker worker -Q email``.

Importing this package registers the send task and the lifecycle hooks; the delivery
pipeline reads as its module names: message → connection → pool → delivery → task_runner.
"""

import worker.lifecycle  # noqa: F401  (registers the signal handlers)
from tasks import app, send_email

__all__ = ["app", "send_email"]
