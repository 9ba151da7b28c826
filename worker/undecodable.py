"""Messages in the queue that are not jobs: dead-lettered with a reason, never a crash.

Anyone who can write to the Redis can put anything in a queue. Celery meets each kind of
foreign message at a different place, and left alone it logs and drops most of them, or, for
bytes that are not even a JSON envelope, stops the worker ("Unrecoverable error"):

* not JSON at all (garbage pushed onto the list)  → kombu's BRPOP reader, wrapped here;
* an envelope whose body does not decode            → ``Consumer.on_decode_error``, wrapped;
* a pickle or other refused content type            → Celery's ``task_rejected`` signal;
* a task name this worker does not know            → Celery's ``task_unknown`` signal;
* our task with a payload of another version       → :func:`worker.task_runner.run_job`.

Each becomes a dead letter (``mailworker dead show ID``) and one ``undecodable`` Sentry event;
the message is acknowledged and the worker goes on. Nothing foreign is ever deserialised.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from celery import bootsteps
from celery.signals import task_rejected, task_unknown

from tasks.app import TRANSACTIONAL_QUEUE
from tasks.dead import bury
from tasks.sentry import report

log = logging.getLogger("mailworker.undecodable")

_KEPT = 500  # characters of a foreign message kept in its dead letter, for an operator


def bury_undecodable(
    job_id: str | None, reason: str, queue: str, payload: dict[str, Any] | None = None
) -> str:
    """Dead-letter a message that is not a job we can read; return the id it is kept under."""
    job_id = job_id or f"undecodable-{uuid.uuid4()}"
    log.error("dead-lettering undecodable job %s from queue %s: %s", job_id, queue, reason)
    bury(job_id, payload, reason=reason, queue=queue)
    report("undecodable", f"undecodable job: {reason}", account="-", job_id=job_id, queue=queue)
    return job_id


def _excerpt(raw: Any) -> str:
    return repr(raw)[:_KEPT]


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
    _, queue = _message_parts(message)
    bury_undecodable(id, f"unknown task {name!r}: this worker runs mailworker tasks only", queue)


class UndecodableStep(bootsteps.StartStopStep):
    """Consumer bootstep: route decode failures to :func:`bury_undecodable`.

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
            bury_undecodable(job_id, reason, queue, {"raw": _excerpt(message.body)})
            original(message, exc)  # logs and acknowledges it

        consumer.on_decode_error = on_decode_error

    def start(self, consumer: Any) -> None:
        channel = consumer.task_consumer.channel
        handlers = getattr(channel, "handlers", None)
        if isinstance(handlers, dict) and "BRPOP" in handlers:  # kombu's Redis transport
            handlers["BRPOP"] = _guarded(handlers["BRPOP"])


def _guarded(read: Any) -> Any:
    if getattr(read, "mailworker_guarded", False):
        return read

    def brpop_read(**options: Any) -> Any:
        # The item is already popped when kombu fails to parse it: keeping the worker alive
        # and recording what it was is all that is left to do.
        try:
            return read(**options)
        except json.JSONDecodeError as exc:
            reason = f"not a JSON message envelope: {exc.msg} at position {exc.pos}"
            bury_undecodable(None, reason, "?", {"raw": _excerpt(exc.doc)})
        except UnicodeDecodeError as exc:
            bury_undecodable(None, f"not UTF-8 text: {exc}", "?", {"raw": _excerpt(exc.object)})
        return True

    brpop_read.mailworker_guarded = True  # type: ignore[attr-defined]
    return brpop_read
