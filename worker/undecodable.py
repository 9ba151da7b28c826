"""Messages in the queue that are not jobs: dead-lettered with a reason, never a crash.

Anyone who can write to the Redis can put anything in a queue. Every item the worker pops
is screened (:mod:`worker.queue_items`) before kombu or Celery reads it, and what Celery
itself refuses later is caught where it is refused:

* anything that is not a task message envelope    → :func:`worker.queue_items.screen`, on
  the raw reply to BRPOP (any size, depth, type or shape: it never reaches kombu);
* a pickle or other refused content type            → Celery's ``task_rejected`` signal;
* a task name this worker does not know            → Celery's ``task_unknown`` signal;
* our task with a payload of another version       → :func:`worker.task_runner.run_job`;
* whatever kombu still fails on, should the screen miss something → the BRPOP handler,
  wrapped: any exception but a lost connection is a dead letter, not a stopped worker.

Each becomes a dead letter (``mailworker dead show ID``) that keeps the item's first 4 KiB
and one ``undecodable`` Sentry event; the item is consumed and the worker goes on. Nothing
foreign is ever deserialised.
"""

from __future__ import annotations

import base64
import logging
import uuid
from typing import Any

from celery import bootsteps
from celery.signals import task_rejected, task_unknown
from kombu.exceptions import InconsistencyError
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str

from mailworker.observe.sentry import report
from mailworker.settings import get_settings
from mailworker.store.dead import bury
from mailworker.tasks.app import TRANSACTIONAL_QUEUE
from mailworker.worker.queue_items import ForeignItem, item_limit, screen

log = logging.getLogger("mailworker.undecodable")

KEPT = 4096  # bytes of a foreign item kept in its dead letter, for an operator


def bury_undecodable(
    job_id: str | None, reason: str, queue: str, payload: dict[str, Any] | None = None
) -> str:
    """Dead-letter a message that is not a job we can read; return the id it is kept under."""
    job_id = job_id or f"undecodable-{uuid.uuid4()}"
    log.error("dead-lettering undecodable job %s from queue %s: %s", job_id, queue, reason)
    bury(job_id, payload, reason=reason, queue=queue)
    report("undecodable", f"undecodable job: {reason}", account="-", job_id=job_id, queue=queue)
    return job_id


def kept(raw: bytes | str) -> dict[str, Any]:
    """What a dead letter keeps of a foreign item: its first KEPT bytes, readable and exact."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
    head = data[:KEPT]
    return {
        "raw": head.decode("utf-8", "backslashreplace"),
        "raw_b64": base64.b64encode(head).decode(),
        "raw_bytes": len(data),
    }


def _message_parts(message: Any) -> tuple[str | None, str]:
    headers = message.headers if isinstance(message.headers, dict) else {}
    job_id = headers.get("id")
    queue = (message.delivery_info or {}).get("routing_key") or TRANSACTIONAL_QUEUE
    return (str(job_id) if job_id else None), str(queue)


@task_rejected.connect
def _on_rejected(message: Any, exc: BaseException | None = None, **_: Any) -> None:
    job_id, queue = _message_parts(message)
    why = str(exc) if exc is not None else "not a Celery task message"
    bury_undecodable(job_id, f"refused ({message.content_type}): {why}", queue)


@task_unknown.connect
def _on_unknown(message: Any, name: str, id: str, **_: Any) -> None:  # noqa: A002 - Celery's
    queue = _message_parts(message)[1]
    bury_undecodable(id, f"unknown task {name!r}: this worker runs mailworker tasks only", queue)


class UndecodableStep(bootsteps.StartStopStep):
    """Consumer bootstep: screen every queue item, route decode failures to a dead letter.

    Installed before the task consumer starts (``on_decode_error`` is read then), and
    re-applied to the broker channel after every (re)connection.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        original = consumer.on_decode_error

        def on_decode_error(message: Any, exc: Exception) -> None:
            job_id, queue = _message_parts(message)
            reason = f"body does not decode ({message.content_type}): {exc}"
            bury_undecodable(job_id, reason, queue, kept(message.body or b""))
            original(message, exc)  # logs and acknowledges it

        consumer.on_decode_error = on_decode_error

    def start(self, consumer: Any) -> None:
        channel = consumer.task_consumer.channel
        handlers = getattr(channel, "handlers", None)
        if isinstance(handlers, dict) and "BRPOP" in handlers:  # kombu's Redis transport
            guard = QueueGuard(channel, item_limit(get_settings().max_message_bytes))
            guard.install()


class QueueGuard:
    """Between Redis and kombu on one channel: the raw reply to each BRPOP is screened.

    kombu's own client wraps ``parse_response`` for BRPOP the same way (to strip the key
    prefix); a foreign item becomes a dead letter and ``None``, which kombu takes for a
    BRPOP that timed out (``Empty``) before it issues the next one.
    """

    def __init__(self, channel: Any, max_bytes: int) -> None:
        self.channel = channel
        self.max_bytes = max_bytes
        self.passed: tuple[str, bytes] | None = None  # the item kombu is reading now

    def install(self) -> None:
        client = self.channel.client
        if not getattr(client.parse_response, "mailworker_guard", False):
            client.parse_response = self._screened(client.parse_response)
        handlers = self.channel.handlers
        if not getattr(handlers["BRPOP"], "mailworker_guard", False):
            handlers["BRPOP"] = self._guarded(handlers["BRPOP"])

    def _screened(self, parse: Any) -> Any:
        def parse_response(connection: Any, command_name: str, **options: Any) -> Any:
            reply = parse(connection, command_name, **options)
            if command_name != "BRPOP" or not reply:
                return reply
            key, item = reply
            queue = bytes_to_str(key).rsplit(self.channel.sep, 1)[0]
            try:
                screen(item, self.max_bytes)
            except ForeignItem as exc:
                self._bury(exc.job_id, exc.reason, queue, item)
                return None
            except Exception as exc:  # noqa: BLE001 - the screen itself must never stop us
                self._bury(None, f"unreadable: {type(exc).__name__}", queue, item)
                return None
            self.passed = (queue, item)
            return reply

        parse_response.mailworker_guard = True  # type: ignore[attr-defined]
        return parse_response

    def _guarded(self, read: Any) -> Any:
        let_through = (Empty, InconsistencyError, *self.channel.connection_errors)

        def brpop_read(**options: Any) -> Any:
            # Last line: the item passed the screen, yet kombu or Celery failed on it. It is
            # already popped; recording it and keeping the worker alive is all that is left.
            try:
                return read(**options)
            except let_through:
                raise
            except Exception as exc:  # noqa: BLE001
                queue, item = self.passed or ("?", b"")
                reason = f"kombu could not read it ({type(exc).__name__}: {exc})"[:300]
                self._bury(None, reason, queue, item)
                return True
            finally:
                self.passed = None

        brpop_read.mailworker_guard = True  # type: ignore[attr-defined]
        return brpop_read

    @staticmethod
    def _bury(job_id: str | None, reason: str, queue: str, item: bytes) -> None:
        try:
            bury_undecodable(job_id, reason, queue, kept(item))
        except Exception:  # noqa: BLE001 - Redis failing: the item is gone, say so at least
            log.exception("could not dead-letter a foreign item from %s (%s)", queue, reason)
