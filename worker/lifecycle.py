"""A worker's life: reporting set up at start, every pooled connection closed at the end.

At start (``worker_init``, and ``worker_process_init`` in prefork children): Sentry, the
Prometheus endpoint (``METRICS_PORT``), and the log format and address mask on Celery's
handlers. At the end: Celery's warm shutdown sends ``worker_shutdown`` (and
``worker_process_shutdown`` in prefork children); a cold shutdown sends neither, so
``atexit`` covers it. Closing twice is harmless.
"""

from __future__ import annotations

import atexit
from typing import Any

from celery.signals import (
    after_setup_logger,
    celeryd_after_setup,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from mailworker.delivery.runtime import close_runtime
from mailworker.observe.logs import configure_logging
from mailworker.observe.sentry import init_sentry
from mailworker.settings import get_settings
from mailworker.tasks.app import PRIORITY_QUEUE, TRANSACTIONAL_QUEUE, app
from mailworker.worker.housekeeping import HousekeeperStep
from mailworker.worker.metrics import serve_metrics
from mailworker.worker.undecodable import UndecodableStep

app.steps["worker"].add(HousekeeperStep)
app.steps["consumer"].add(UndecodableStep)


@worker_init.connect
def _on_worker_init(**_: Any) -> None:
    settings = get_settings()
    init_sentry(settings)
    serve_metrics(settings.observability.metrics_port, settings.observability.metrics_host,
                  accounts=sorted(settings.accounts))  # fmt: skip


@celeryd_after_setup.connect
def _serve_priority_lane(instance: Any, **_: Any) -> None:
    """A worker of ``email`` serves ``email.high`` too, even from a Procfile that names only
    ``email``: a high-priority job never waits for a worker nobody started."""
    queues = instance.app.amqp.queues
    if TRANSACTIONAL_QUEUE in queues.consume_from and PRIORITY_QUEUE not in queues.consume_from:
        queues.select_add(PRIORITY_QUEUE)


@worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    init_sentry(get_settings())


@after_setup_logger.connect
def _on_logging(logger: Any, **_: Any) -> None:
    configure_logging(get_settings(), logger.handlers)


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    close_runtime()


@worker_process_shutdown.connect
def _on_process_shutdown(**_: Any) -> None:
    close_runtime()


atexit.register(close_runtime)
