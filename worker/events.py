"""The events relay: hands recipient outcomes from the outbox to the app's ``EVENTS_TASK``.

One daemon thread per worker process when ``EVENTS_TASK`` is set. Each round it takes up
to ``BATCH`` events from the outbox (store.events, a Redis stream read by one consumer
group, so the workers of a cluster share the work), publishes each as a Celery task message
for the app's task, and only then deletes them: a relay killed in between leaves them to
another relay after ``RECLAIM_AFTER`` seconds, so an event may arrive twice but is never
lost; the app deduplicates on ``event["id"]``.

The message goes to ``EVENTS_BROKER_URL`` (default: the Redis of ``REDIS_URL``, without
mailworker's key prefix, as a plain Celery app of the same Redis expects) on
``EVENTS_QUEUE`` (``celery``, Celery's default). The relay never waits for the app's task
to run, so a slow task slows nothing here; it runs beside delivery, in its own thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery import Celery

from mailworker.settings import Settings, get_settings
from mailworker.store import events as outbox
from mailworker.store.client import get_redis

log = logging.getLogger("mailworker.events")

BATCH = 200
INTERVAL = 0.25
RECLAIM_AFTER = 30.0


def events_app(settings: Settings) -> Celery:
    """A Celery app that only publishes, to the app's broker."""
    broker = settings.events.broker_url or settings.redis_url
    publisher = Celery("mailworker-events", broker=broker, set_as_current=False)
    publisher.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2,
                                   "interval_step": 0.5, "interval_max": 1.0},
    )  # fmt: skip
    return publisher


class EventRelay:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._publisher: Celery | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mailworker-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._publisher is not None:
            self._publisher.close()

    def relay_once(self) -> int:
        """Publish one batch; how many events went out."""
        task, queue = self.settings.events.task, self.settings.events.queue
        assert task is not None
        client = get_redis()
        taken = outbox.take(self.consumer, BATCH, RECLAIM_AFTER, client=client)
        if not taken:
            return 0
        self._publisher = self._publisher or events_app(self.settings)
        published: list[str] = []
        try:
            for entry_id, event in taken:
                self._publisher.send_task(task, args=[event], queue=queue,
                                          task_id=event["id"])  # fmt: skip
                published.append(entry_id)
        finally:
            outbox.done(published, client=client)
        return len(published)

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                if first:
                    outbox.ensure_group()
                    first = False
                if self.relay_once() == BATCH:
                    continue  # more are waiting
            except Exception:  # noqa: BLE001 - broker or Redis hiccup: the events wait
                log.exception("events relay failed; retrying")
            self._stop.wait(INTERVAL)


def start_relay(settings: Settings) -> EventRelay | None:
    if not settings.events.task:
        return None
    relay = EventRelay(settings)
    relay.start()
    return relay
