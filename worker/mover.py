"""Move due jobs from the Redis deferred set back onto their queue, in every worker.

Runs as a Celery worker bootstep (so both ``celery worker`` and embedded test workers get
it), in one daemon thread per worker. Claims are atomic and leased (see
:mod:`tasks.deferred`), so any number of workers on any number of machines can run it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from mailworker.store.deferred import claim_due, release
from mailworker.tasks.send import publish

log = logging.getLogger("mailworker.mover")

POLL_INTERVAL = 0.5


class DeferredMover:
    def __init__(self, interval: float = POLL_INTERVAL) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mailworker-mover", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def move_once(self) -> int:
        claimed = claim_due()
        moved = []
        try:
            for job in claimed:
                publish(job.job_id, job.payload, job.queue, task=job.task)
                moved.append(job.job_id)
        finally:
            # Unpublished claims stay leased and come back when the lease expires.
            release(moved)
        return len(moved)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.move_once():
                    continue  # more may be due: do not sleep
            except Exception:  # noqa: BLE001 - Redis hiccup: log, keep the thread alive
                log.exception("moving deferred jobs failed; retrying")
            self._stop.wait(self._interval)


class DeferredMoverStep(bootsteps.StartStopStep):
    """Worker bootstep: start the mover with the worker, stop it on shutdown."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.mover = DeferredMover()

    def start(self, worker: Any) -> None:
        self.mover.start()

    def stop(self, worker: Any) -> None:
        self.mover.stop()

    def shutdown(self, worker: Any) -> None:
        self.mover.stop()
