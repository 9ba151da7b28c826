"""``send_email``: the producer API and the Celery task it enqueues.

``send_email.delay(...)`` validates in the calling process (see :mod:`tasks.validation`)
and publishes one JSON job to the ``email`` queue. In a worker, the task is a thin adapter:
it decodes the job and hands it to the delivery pipeline; the worker package provides that
body (:mod:`mailworker.tasks.bodies`), so producers never load aiosmtplib.
"""

from __future__ import annotations

import datetime
import math
import time
from dataclasses import replace
from typing import Any

import redis
from celery import Task
from celery.result import AsyncResult
from kombu.exceptions import OperationalError

from mailworker.observe.sentry import init_sentry
from mailworker.settings import get_settings
from mailworker.store import lifecycle
from mailworker.store.events import Event, encode
from mailworker.store.job import EmailJob
from mailworker.store.ledger import claim_idempotency_key, release_idempotency_key
from mailworker.tasks import bodies
from mailworker.tasks.app import PRIORITY_QUEUE, SEND_EMAIL_TASK, TRANSACTIONAL_QUEUE, app
from mailworker.tasks.capture import RECORDER
from mailworker.tasks.errors import InvalidEmail, QueueUnavailable
from mailworker.tasks.validation import build_job


class SendEmailTask(Task):
    """A task whose ``apply_async`` validates before publishing."""

    typing = False  # arguments are checked by build_job, with better errors than Celery's

    def apply_async(
        self,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        if args:
            raise InvalidEmail("args", "send_email takes keyword arguments only")
        settings = get_settings()
        init_sentry(settings)  # a producer with SENTRY_DSN reports too (no-op otherwise)
        arguments = dict(kwargs or {})
        send_at = parse_send_at(arguments.pop("send_at", None))
        lane = priority_queue(arguments.pop("priority", "normal"))
        expiry = parse_expiry(arguments.pop("expires_in", None), arguments.pop("expires_at", None))
        # The Django backend passes local_domains=True: Django sends to root@localhost.
        job = build_job(settings, arguments, local_domains=options.pop("local_domains", None))
        if expiry is not None:
            if send_at is not None and send_at >= expiry:
                raise InvalidEmail("expires_at", "the job would expire before its send_at")
            job = replace(job, expires_at=expiry)
        queue = options.pop("queue", None) or lane
        if (record := RECORDER.get()) is not None:  # an app's test captures it (testing)
            record(job, queue, send_at)
            return AsyncResult(job.id, app=app)
        if job.idempotency_key is not None:
            owner = claim_idempotency_key(job.idempotency_key, job.id)
            if owner != job.id:
                return AsyncResult(owner, app=app)  # queued or sent already: nothing to do
        return enqueue(job, queue=queue, send_at=send_at, **options)


# The decorator is lazy: the app (and so the settings) is configured on first use of the
# task, not when a producer imports it.
@app.task(base=SendEmailTask, name=SEND_EMAIL_TASK, bind=True)
def send_email(self: SendEmailTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    # The worker provides the body (mailworker.worker.task_runner.run_job), which
    # dead-letters whatever is not one job=: anything can arrive from Redis.
    return bodies.run(SEND_EMAIL_TASK, self, *args, **kwargs)


def priority_queue(value: Any) -> str:
    """``priority=``: ``"high"`` takes the priority lane, ``"normal"`` (the default) not."""
    if value not in ("normal", "high"):
        raise InvalidEmail("priority", f'expected "normal" or "high", got {value!r}')
    return PRIORITY_QUEUE if value == "high" else TRANSACTIONAL_QUEUE


def parse_expiry(expires_in: Any, expires_at: Any) -> float | None:
    """``expires_in=`` seconds from now, or ``expires_at=`` an aware datetime or a Unix
    timestamp: when a job not yet accepted by a server ends ``expired`` instead."""
    if expires_in is not None and expires_at is not None:
        raise InvalidEmail("expires_in", "give expires_in= or expires_at=, not both")
    if expires_in is not None:
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise InvalidEmail("expires_in", f"expected seconds, got {expires_in!r}")
        if not (math.isfinite(expires_in) and expires_in > 0):
            raise InvalidEmail(
                "expires_in", f"expected a positive number of seconds, got {expires_in!r}"
            )
        return time.time() + float(expires_in)
    if expires_at is None:
        return None
    try:
        at = parse_send_at(expires_at)
    except InvalidEmail as exc:
        raise InvalidEmail("expires_at", exc.problem) from None
    if at is not None and at <= time.time():
        raise InvalidEmail("expires_at", "is in the past: the job could never be sent")
    return at


def parse_send_at(value: Any) -> float | None:
    """``send_at=``: a timezone-aware datetime or a Unix timestamp; ``None`` means now."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise InvalidEmail("send_at", "give a timezone-aware datetime (e.g. with UTC)")
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise InvalidEmail("send_at", f"expected a datetime or a Unix timestamp, got {value!r}")


def enqueue(
    job: EmailJob,
    *,
    queue: str = TRANSACTIONAL_QUEUE,
    send_at: float | None = None,
    task: str = "",
    revive: bool = False,
    **options: Any,
) -> AsyncResult:
    """Create the job's record (store.lifecycle) and publish it; the job id is the task id.

    With ``send_at`` in the future the job is ``scheduled`` in Redis instead (never held as
    a Celery ETA in a worker's memory) and a worker's mover publishes it when due. A
    producer killed between the record and the publish leaves a ``queued`` job with no
    message: the reaper finds it and publishes it (worker.housekeeping).
    """
    events = ""
    if get_settings().events.task:
        tags = dict(job.tags)
        events = encode(
            [Event("queued", job.id, r, job.account, tags=tags) for r in job.recipients]
        )
    try:
        put(
            job.id,
            job.to_payload(),
            queue,
            job.account,
            task=task,
            send_at=send_at,
            revive=revive,
            events=events,
            expires_at=job.expires_at,
            **options,
        )
    except QueueUnavailable:
        _forget(job)
        raise
    return AsyncResult(job.id, app=app)


def put(
    job_id: str,
    payload: dict[str, Any],
    queue: str,
    account: str,
    *,
    task: str = "",
    send_at: float | None = None,
    revive: bool = False,
    events: str = "",
    expires_at: float | None = None,
    **options: Any,
) -> str:
    """Create one job's record and publish it (a scheduled one waits for the mover): the
    state it starts in, or ``exists`` if a job with this id was put before."""
    try:
        state, _ = lifecycle.enqueue(
            job_id, payload, queue=queue, account=account, task=task, send_at=send_at,
            revive=revive, events=events, expires_at=expires_at,
        )  # fmt: skip
        if state == "queued":
            publish(job_id, payload, queue, task=task or None, **options)
    except (OperationalError, ConnectionError, TimeoutError, redis.RedisError) as exc:
        raise QueueUnavailable(
            f"could not queue job {job_id}: Redis at REDIS_URL did not answer ({exc}); "
            "check that Redis is running and reachable, then retry"
        ) from exc
    return state


def publish(
    job_id: str, payload: dict[str, Any], queue: str, task: str | None = None, **options: Any
) -> AsyncResult:
    """Put one job (or campaign batch) on ``queue``: for enqueue and the deferred-set mover."""
    return app.send_task(
        task or SEND_EMAIL_TASK,
        kwargs={"job": payload},
        task_id=job_id,
        queue=queue,
        # What Celery logs, events and Flower show instead of the payload: no addresses.
        argsrepr="()",
        kwargsrepr=f"{{'job': '{job_id}'}}",
        **options,
    )


def _forget(job: EmailJob) -> None:
    """A job that was never queued leaves nothing: no record, and its idempotency key
    free for the caller's retry."""
    try:
        lifecycle.forget(job.id)
        if job.idempotency_key is not None:
            release_idempotency_key(job.idempotency_key, job.id)
    except Exception:  # noqa: BLE001 - Redis is already known to be failing
        pass
