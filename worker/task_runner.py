"""The Celery adapter: decode the job, run the pipeline, turn the outcome into a state.

Outcomes: ``sent`` (every recipient accepted), ``retrying`` (a transient failure; the job is
published again with a backoff, carrying the recipients already accepted so they never get
a second copy), ``failed`` (a permanent refusal or a broken account; the reason is kept in
the job's status record).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from celery import Task

from tasks.job import EmailJob, UndecodableJob
from tasks.send import enqueue
from tasks.status import record_status
from worker.delivery import DeliveryReport
from worker.errors import DeliveryError, TransientFailure
from worker.runtime import get_runtime

log = logging.getLogger("mailworker.delivery")

MAX_ATTEMPTS = 8


def backoff(attempt: int, *, base: float = 2.0, cap: float = 120.0) -> float:
    """Seconds to wait before attempt ``attempt + 1``: 2, 4, 8, ... capped."""
    return min(cap, base * 2 ** (attempt - 1))


def run_job(task: Task, payload: Any) -> dict[str, Any]:
    try:
        job = EmailJob.from_payload(payload)
    except UndecodableJob as exc:
        log.error("dropping undecodable job %s: %s", task.request.id, exc)
        return {"state": "failed", "reason": str(exc)}

    record_status(job.id, "sending", attempt=job.attempt)
    started = time.monotonic()
    try:
        report = get_runtime().deliver(job)
    except TransientFailure as exc:
        _log_attempt(job, "transient", started, exc.code)
        return _retry_or_fail(job, str(exc), job.done)
    except DeliveryError as exc:
        _log_attempt(job, "failed", started, exc.code)
        record_status(job.id, "failed", error=str(exc), attempt=job.attempt)
        return {"state": "failed", "reason": str(exc)}
    except (ValueError, TypeError, UnicodeError) as exc:
        # A job that passed validation but cannot be built is a bug; record it, keep running.
        log.exception("job %s could not be built into a message", job.id)
        reason = f"message could not be built: {type(exc).__name__}"
        record_status(job.id, "failed", error=reason, attempt=job.attempt)
        return {"state": "failed", "reason": reason}
    _log_attempt(job, "delivered" if not report.refused else "partial", started, 250)
    return _settle(job, report)


def _settle(job: EmailJob, report: DeliveryReport) -> dict[str, Any]:
    done = (*job.done, *report.accepted)
    recipients = {r: "sent" for r in done}
    recipients.update({r: f"refused {ref.code}" for r, ref in report.refused.items()})
    retry_later = [r for r, ref in report.refused.items() if ref.transient]
    if retry_later:
        reason = "; ".join(
            f"{r}: {report.refused[r].code} {report.refused[r].message}" for r in retry_later
        )
        return _retry_or_fail(job, reason, done, recipients)
    state = "sent" if not report.refused else "failed"
    record_status(job.id, state, recipients=recipients, attempt=job.attempt)
    return {"state": state, "recipients": recipients}


def _retry_or_fail(
    job: EmailJob, reason: str, done: tuple[str, ...], recipients: dict[str, str] | None = None
) -> dict[str, Any]:
    if job.attempt >= MAX_ATTEMPTS:
        record_status(
            job.id,
            "failed",
            error=f"gave up after {job.attempt} attempts: {reason}",
            recipients=recipients,
            attempt=job.attempt,
        )
        return {"state": "failed", "reason": reason}
    delay = backoff(job.attempt)
    retry = replace(job, attempt=job.attempt + 1, done=done)
    record_status(
        job.id,
        "retrying",
        error=reason,
        next_attempt_at=time.time() + delay,
        recipients=recipients,
        attempt=job.attempt,
    )
    enqueue(retry, countdown=delay)
    return {"state": "retrying", "reason": reason}


def _log_attempt(job: EmailJob, outcome: str, started: float, code: int | None) -> None:
    log.info(
        "attempt job=%s account=%s outcome=%s code=%s attempt=%d latency_ms=%.1f",
        job.id,
        job.account,
        outcome,
        code,
        job.attempt,
        (time.monotonic() - started) * 1000,
    )
