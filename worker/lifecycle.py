"""Close every pooled SMTP connection (QUIT) when a worker process stops.

Celery's warm shutdown sends ``worker_shutdown`` (and ``worker_process_shutdown`` in prefork
children); a cold shutdown sends neither, so ``atexit`` covers it. Closing twice is harmless.
"""

from __future__ import annotations

import atexit
from typing import Any

from celery.signals import worker_process_shutdown, worker_shutdown

from tasks.app import app
from worker.mover import DeferredMoverStep
from worker.runtime import close_runtime

app.steps["worker"].add(DeferredMoverStep)


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    close_runtime()


@worker_process_shutdown.connect
def _on_process_shutdown(**_: Any) -> None:
    close_runtime()


atexit.register(close_runtime)
