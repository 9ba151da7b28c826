"""mailworker's worker: ``celery -A mailworker.worker worker -Q email``.

The Celery worker process, on top of everything else: the task bodies (task_runner for
transactional jobs, campaign_runner for bulk batches), the screening of raw queue items
(queue_items, undecodable), the mover of deferred jobs, the process lifecycle, metrics and
the failing-account alarm. Importing it registers the tasks' bodies and the lifecycle hooks.
May import every other part of mailworker; nothing imports it but the CLI and ``-A``.
"""

from __future__ import annotations

import mailworker.worker.lifecycle  # noqa: F401  (registers the signal handlers)
from mailworker.tasks import app, send_email

__all__ = ["app", "send_email"]
