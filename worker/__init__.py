"""mailworker's worker: ``celery -A mailworker.worker worker -Q email``.

The Celery worker process, on top of everything else: the task bodies (task_runner for
transactional jobs, campaign_runner for bulk batches), the screening of raw queue items
(queue_items, undecodable), the housekeeper (mover and reaper), the process lifecycle, metrics and
the failing-account alarm. Importing it registers the tasks' bodies and the lifecycle hooks.
May import every other part of mailworker; nothing imports it but the CLI and ``-A``.
"""

from __future__ import annotations

import mailworker.worker.lifecycle  # noqa: F401  (registers the signal handlers)
from mailworker.tasks import app, bodies, send_email
from mailworker.tasks.app import SEND_BATCH_TASK, SEND_EMAIL_TASK
from mailworker.worker.campaign_runner import run_batch
from mailworker.worker.task_runner import run_job

bodies.provide(SEND_EMAIL_TASK, run_job)
bodies.provide(SEND_BATCH_TASK, run_batch)

__all__ = ["app", "send_email"]
