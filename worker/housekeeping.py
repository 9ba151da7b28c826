"""Every worker's housekeeper: publishes jobs whose time has come and returns lost ones.

One daemon thread per worker process (a Celery worker bootstep, so ``celery worker`` and
embedded test workers both get it, with the events relay of worker.events beside it when
``EVENTS_TASK`` is set), running two duties:

* the mover, every POLL_INTERVAL: ``scheduled``, ``deferred`` and ``paused`` jobs whose due
  time has passed (Redis's clock) become ``queued`` and are published, and waiting jobs
  whose expiry has come (``send_email(expires_in=...)``) end ``expired``;
* the reaper, every REAP_INTERVAL in one worker of the cluster at a time (a lock with a
  TTL): jobs whose lease lapsed (their worker died or hung) and queued jobs whose broker
  message is gone (store.lost) are published again; once an hour, expired suppression
  entries are deleted.

Each move is an atomic step of store.lifecycle, so any number of workers on any number of
machines can run it; a housekeeper killed between a move and its publish leaves a queued job
without a message, which the reaper finds.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from celery import bootsteps

from mailworker.settings import get_settings
from mailworker.store import keys, lifecycle, suppression
from mailworker.store.client import get_redis
from mailworker.store.events import Event, encode
from mailworker.store.job import EmailJob
from mailworker.store.lost import lost_jobs
from mailworker.tasks.send import publish
from mailworker.worker.events import EventRelay, start_relay

log = logging.getLogger("mailworker.housekeeping")

POLL_INTERVAL = 0.5
REAP_INTERVAL = 5.0
PRUNE_INTERVAL = 3600


def publish_ready(ready: list[lifecycle.Ready]) -> int:
    """Publish jobs the lifecycle made ``queued``; one that fails waits for the reaper."""
    for job in ready:
        publish(job.job_id, job.payload, job.queue, task=job.task)
    return len(ready)


def move_due() -> int:
    return publish_ready(lifecycle.promote_due())


def expire_due() -> int:
    """End ``expired`` each job whose expiry came while it waited (in its queue, for its
    time, a backoff or a pause). One being sent is left to its worker, which checks the
    expiry before its transaction; so does every claim, should this step be cut short."""
    settings = get_settings()
    ended = 0
    for job_id in lifecycle.take_expired():
        events = ""
        if settings.events.task and (payload := lifecycle.payload_of(job_id)) is not None:
            job = EmailJob.from_payload(payload)
            tags = dict(job.tags)
            events = encode([Event("expired", job.id, r, job.account, tags=tags)
                             for r in job.recipients if r not in job.done])  # fmt: skip
        if lifecycle.end_waiting(
            job_id, "expired", "its expiry came while it waited", events=events
        ):
            log.info("job %s expired while it waited", job_id)
            ended += 1
    return ended


def reap() -> int:
    """Return lapsed leases and lost messages; ``0`` unless this worker's turn."""
    client = get_redis()
    token = uuid.uuid4().hex
    if not client.set(keys.REAPER_LOCK, token, nx=True, px=int(REAP_INTERVAL * 1000)):
        return 0  # another worker reaps this round
    ready = lifecycle.reap_leases(client=client)
    for job in ready:
        log.warning("job %s: its lease lapsed (worker gone?); queued again", job.job_id)
    for job_id, queued_at in lost_jobs(get_settings().recovery.lost_after, client=client):
        found = lifecycle.requeue_lost(job_id, queued_at, client=client)
        if found is not None:
            log.warning("job %s: its queue message was lost; published again", job_id)
            ready.append(found)
    prune_suppressions(client)
    return publish_ready(ready)


def prune_suppressions(client: Any) -> int:
    """Once an hour (in one worker): drop expired entries (soft-bounce suppressions)."""
    if not client.set(keys.SUPPRESSION_PRUNED, "1", nx=True, ex=PRUNE_INTERVAL):
        return 0
    return suppression.prune_expired("bulk", client=client)


class Housekeeper:
    def __init__(self, interval: float = POLL_INTERVAL) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_reap = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="mailworker-housekeeper", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def run_once(self) -> int:
        moved = expire_due() + move_due()
        if time.monotonic() >= self._next_reap:
            self._next_reap = time.monotonic() + REAP_INTERVAL
            moved += reap()
        return moved

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_once():
                    continue  # more may be due: do not sleep
            except Exception:  # noqa: BLE001 - Redis hiccup: log, keep the thread alive
                log.exception("housekeeping failed; retrying")
            self._stop.wait(self._interval)


class HousekeeperStep(bootsteps.StartStopStep):
    """Worker bootstep: start the housekeeper with the worker, stop it on shutdown."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.housekeeper = Housekeeper()
        self.relay: EventRelay | None = None

    def start(self, worker: Any) -> None:
        self.housekeeper.start()
        self.relay = start_relay(get_settings())  # EVENTS_TASK: its own thread

    def stop(self, worker: Any) -> None:
        self.housekeeper.stop()
        if self.relay is not None:
            self.relay.stop()
            self.relay = None

    def shutdown(self, worker: Any) -> None:
        self.stop(worker)
