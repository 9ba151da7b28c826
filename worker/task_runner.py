"""The Celery adapter: decode the job, run the pipeline, turn the outcome into a state.

    suppression / sent-ledger check → paused account? → deliver (rate limit, pooled send) →
    classify each reply (worker.classify) → plan it (worker.outcome) →
    sent | deferred (retry, paused account, quota) | dead-lettered

A job never ends silently. Recipients that got a 250 go into the sent-ledger before
anything else, so a redelivered or retried job never sends them a second copy; retries go
through the Redis deferred set, never as an ETA held in a worker's memory.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from typing import Any, cast

from celery import Task
from celery.exceptions import Reject

from mailworker.delivery.classify import Verdict, account_advice, classify_error, enhanced_code
from mailworker.delivery.deliver import DeliveryReport
from mailworker.delivery.errors import Backpressure, DeliveryError, RateLimited
from mailworker.delivery.outcome import Fate, plan
from mailworker.delivery.ratelimit import slow_down
from mailworker.delivery.retry import next_retry_at
from mailworker.delivery.runtime import get_runtime
from mailworker.observe.sentry import report
from mailworker.settings import Settings, SettingsError, get_settings
from mailworker.store import suppression
from mailworker.store.client import get_redis
from mailworker.store.dead import bury
from mailworker.store.deferred import stage_defer, stage_discard
from mailworker.store.job import EmailJob, UndecodableJob
from mailworker.store.ledger import (
    lock_remaining,
    release_idempotency_key,
    stage_hold,
    stage_let_go,
    stage_sent_lookup,
)
from mailworker.store.pauses import pause_account, read_pause, stage_held, stage_read_pause
from mailworker.store.status import State, stage_previous_state, stage_status
from mailworker.tasks.app import TRANSACTIONAL_QUEUE
from mailworker.worker.attempt import Outcome, log_attempt
from mailworker.worker.failing import note_transient, stage_recovered
from mailworker.worker.metrics import stage_counts
from mailworker.worker.undecodable import bury_undecodable

log = logging.getLogger("mailworker.delivery")


def run_job(task: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run the task's one ``job=`` argument; anything else is dead-lettered with a reason."""
    queue = (task.request.delivery_info or {}).get("routing_key") or TRANSACTIONAL_QUEUE
    payload = kwargs.get("job")
    try:
        if args or list(kwargs) != ["job"]:
            raise UndecodableJob(
                f"expected one keyword argument job=, got {len(args)} positional and "
                f"keywords {sorted(map(str, kwargs))[:5]}"
            )
        job = EmailJob.from_payload(payload)
    except UndecodableJob as exc:
        kept = payload if isinstance(payload, dict) else None
        bury_undecodable(str(task.request.id), str(exc), queue, kept)
        return {"state": "dead", "failure": "undecodable", "job_id": str(task.request.id)}
    return JobRun(job, queue, get_settings()).run_safely()


class JobRun:
    def __init__(self, job: EmailJob, queue: str, settings: Settings) -> None:
        self.job = job
        self.queue = queue
        self.settings = settings
        self.outcome = Outcome(sent=set(job.done))
        self.client = get_redis()
        self.last_refusal: tuple[int, str] | None = None
        self.previous_state: str | None = None

    def run_safely(self) -> dict[str, Any]:
        """:meth:`run`, and an error that escapes it never acks the job away."""
        try:
            return self.run()
        except Exception as exc:  # noqa: BLE001 - Redis gone past its retries, or a bug
            log.error("job %s: %s escaped the attempt", self.job.id, type(exc).__name__)
            try:  # an attempt spent, so a bug ends in a dead letter, not a loop
                return self._retry(f"unexpected {type(exc).__name__} in the worker", None)
            except Exception:  # noqa: BLE001 - Redis is still away: back to the queue
                raise Reject(f"job {self.job.id}: {type(exc).__name__}", requeue=True) from exc

    def run(self) -> dict[str, Any]:
        job = self.job
        held, blocked, pause = self._preflight()
        if not held:
            # Another copy is being sent, or its worker died holding the lock: look again
            # when the lock has expired; the sent-ledger decides what is left to send then.
            wait = lock_remaining(job.id, client=self.client) + 1
            log.info("job %s: another copy holds the run lock; again in %d s", job.id, wait)
            return self._defer(
                time.time() + wait,
                "another copy of this job is being sent",
                consume_attempt=False,
                release_lock=False,
            )
        try:
            return self._attempt(blocked, pause)
        except BaseException:
            # Every normal exit releases the lock in _commit; an unexpected error must too,
            # or the job's next delivery would be refused as a duplicate.
            pipe = self.client.pipeline(transaction=False)
            stage_let_go(pipe, job.id)
            pipe.execute()
            raise

    def _preflight(self) -> tuple[bool, set[str], tuple[float, str] | None]:
        """One round trip: run lock, sent-ledger, suppression list, account pause, status."""
        job = self.job
        account = self.settings.accounts.get(job.account)
        lock_seconds = self.settings.smtp_timeout * 2 + 30 + self.settings.limiter.max_sleep
        if account is not None:
            lock_seconds += account.pool.acquire_timeout
        pipe = self.client.pipeline(transaction=False)
        stage_hold(pipe, job.id, lock_seconds)
        stage_sent_lookup(pipe, job.id)
        suppression.stage_reasons(pipe, job.recipients)
        stage_read_pause(pipe, job.account)
        stage_previous_state(pipe, job.id)
        stage_status(pipe, job.id, "sending", attempt=job.attempt)
        held, sent, flags, pause, self.previous_state, *_ = pipe.execute()
        self.outcome.sent.update(sent)
        blocked = {r for r, flag in zip(job.recipients, flags, strict=True) if flag is not None}
        if job.ignore_suppression:
            blocked = set()  # the app asked for it: e.g. a password reset to a past bounce
        return bool(held), blocked, read_pause(pause)

    def _attempt(self, blocked: set[str], pause: tuple[float, str] | None) -> dict[str, Any]:
        job = self.job
        self.outcome.bounced.update({r: "suppressed" for r in blocked})
        pending = tuple(
            r for r in job.recipients if r not in self.outcome.sent and r not in blocked
        )
        if not pending and self.previous_state in ("sent", "failed"):
            return self._already_done()  # a second delivery of a job that has ended
        if not pending:
            return self._finish()  # redelivered after a crash, or everyone suppressed
        if pause is not None:
            return self._defer(
                pause[0],
                f"account {job.account!r} paused: {pause[1]}",
                consume_attempt=False,
                held_by_pause=True,
            )
        started = time.monotonic()
        try:
            report = get_runtime().deliver(replace(job, done=tuple(self.outcome.sent | blocked)))
        except SettingsError as exc:  # this worker lacks the account: wait for one that has it
            return self._defer(
                time.time() + self.settings.account_pause_seconds, str(exc), consume_attempt=False
            )
        except RateLimited as exc:  # a quota is used up: wait in Redis, not in this worker
            return self._defer(time.time() + exc.wait, str(exc), consume_attempt=False)
        except Backpressure as exc:  # every connection stayed busy: not the message's fault
            log_attempt(self.job, "busy", started, None)
            return self._defer(time.time() + random.uniform(1, 3), str(exc), consume_attempt=False)
        except DeliveryError as exc:
            verdict = classify_error(exc)
            log_attempt(self.job, verdict.decision.value, started, exc.code)
            return self._whole_message_failed(verdict, str(exc), exc.reply)
        except (ValueError, TypeError, UnicodeError) as exc:
            log.exception("job %s could not be built into a message", job.id)
            return self._dead(
                f"message could not be built: {type(exc).__name__}", None, "", "unbuildable"
            )
        log_attempt(self.job, "delivered" if not report.refused else "partial", started, 250)
        return self._settle(report)

    def _settle(self, report: DeliveryReport) -> dict[str, Any]:
        self.outcome.sent.update(report.accepted)
        account_trouble: Verdict | None = None
        for recipient, refusal in report.refused.items():
            verdict = refusal.verdict
            chosen = plan(verdict)
            reason = f"{refusal.code} {refusal.message}"
            self.last_refusal = (refusal.code, refusal.message)
            if chosen.slow_down:
                self._slow_down(verdict)
            if chosen.fate is Fate.BOUNCED:
                self.outcome.bounced[recipient] = reason
                suppression.suppress(recipient, f"hard bounce: {reason}")
            elif chosen.fate is Fate.FAILED:
                self.outcome.failed[recipient] = reason
            else:
                self.outcome.retry[recipient] = verdict
                if chosen.pause_account:
                    account_trouble = verdict
        if account_trouble is not None:
            code, message = self.last_refusal or (None, "")
            return self._pause_and_defer(
                account_trouble, f"account or sender refused at RCPT: {code} {message}"
            )
        if self.outcome.retry:
            hint = max((v.retry_after or 0 for v in self.outcome.retry.values()), default=0)
            reason = "; ".join(
                f"{r}: {report.refused[r].code} {report.refused[r].message}"
                for r in self.outcome.retry
            )
            first = report.refused[next(iter(self.outcome.retry))]
            return self._retry(reason, hint or None, first.code, first.message)
        return self._finish()

    def _whole_message_failed(self, verdict: Verdict, reason: str, reply: str) -> dict[str, Any]:
        chosen = plan(verdict, whole_message=True)
        if chosen.slow_down:
            self._slow_down(verdict)
        if chosen.fate is Fate.RETRY:
            return self._retry(reason, verdict.retry_after, verdict.code, reply)
        if chosen.fate is Fate.WAIT:
            return self._pause_and_defer(verdict, reason)
        return self._dead(reason, verdict.code, reply, verdict.decision.value)

    def _slow_down(self, verdict: Verdict) -> None:
        if verdict.throttled:
            factor = slow_down(self.job.account, self.settings.limiter.throttle_cooldown)
            log.warning(
                "account %s throttled by the server (%s %s): sending at %.0f%% of its rate",
                self.job.account,
                verdict.code,
                verdict.enhanced or "",
                factor * 100,
            )

    def _pause_and_defer(self, verdict: Verdict, reason: str) -> dict[str, Any]:
        seconds = max(self.settings.account_pause_seconds, verdict.retry_after or 0)
        until, new = pause_account(self.job.account, seconds, reason)
        account = self.settings.accounts.get(self.job.account)
        fix = account_advice(verdict, self.job.account, account.variable if account else "SMTP_URL")
        log.warning("account %s paused for %.0f s: %s", self.job.account, seconds, fix)
        if new:
            message = f"account {self.job.account!r} paused for {seconds:.0f} s: {reason}. {fix}"
            self._report("paused", message, verdict.code, verdict.enhanced)
        return self._defer(until, reason, consume_attempt=False, held_by_pause=True)

    def _retry(
        self, reason: str, hint: float | None, code: int | None = None, reply: str = ""
    ) -> dict[str, Any]:
        due = next_retry_at(self.job.attempt, self.job.created_at, self.settings.retry, hint=hint)
        if due is None:
            gave_up = f"gave up after {self.job.attempt} attempts"
            self.outcome.failed.update({r: gave_up for r in self.outcome.retry})
            return self._dead(f"{gave_up}: {reason}", code, reply, "exhausted")
        if self.outcome.retry and not any(
            plan(v).note_failing for v in self.outcome.retry.values()
        ):
            return self._defer(due, reason, consume_attempt=True)  # the recipients', not ours
        note_transient(
            self.job.account,
            self.settings.observability.failing_after,
            reason,
            code=code,
            queue=self.queue,
            client=self.client,
        )
        return self._defer(due, reason, consume_attempt=True)

    def _defer(
        self,
        due: float,
        reason: str,
        *,
        consume_attempt: bool,
        release_lock: bool = True,
        held_by_pause: bool = False,
    ) -> dict[str, Any]:
        job = self.job
        max_age = self.settings.retry.max_age
        if not consume_attempt and job.created_at and due - job.created_at > max_age:
            # A wait that spends no attempt (a pause, a quota) still ends: RETRY_MAX_AGE.
            return self._dead(
                f"waited longer than RETRY_MAX_AGE ({max_age:.0f} s): {reason}",
                self.last_refusal[0] if self.last_refusal else None,
                self.last_refusal[1] if self.last_refusal else "",
                "exhausted",
            )
        retry = replace(
            job,
            attempt=job.attempt + 1 if consume_attempt else job.attempt,
            done=tuple(self.outcome.sent),
        )
        self._commit(
            "deferred",
            counts={"deferred": 1},
            defer_until=due,
            retry=retry,
            release_lock=release_lock,
            held_by_pause=held_by_pause,
            error=reason,
            next_attempt_at=due,
        )
        return self._result("deferred", next_attempt_at=due)

    def _dead(self, reason: str, code: int | None, reply: str, failure: str) -> dict[str, Any]:
        job = self.job
        bury(job.id, job.to_payload(), reason=reason, queue=self.queue, code=code, reply=reply)
        if job.idempotency_key is not None:
            release_idempotency_key(job.idempotency_key, job.id)
        self._commit("failed", counts={"dead": 1, **self._refusals()}, error=reason)
        log.error("job %s dead-lettered (%s)", job.id, failure)
        self._report(failure, f"email job dead-lettered ({failure}): {reason}", code, reply)
        return self._result("dead", failure=failure)

    def _already_done(self) -> dict[str, Any]:
        """Put the ended state back, count nothing twice, let the lock go."""
        pipe = self.client.pipeline(transaction=True)
        stage_status(pipe, self.job.id, cast(State, self.previous_state))
        stage_discard(pipe, self.job.id)
        stage_let_go(pipe, self.job.id)
        pipe.execute()
        return self._result(str(self.previous_state))

    def _finish(self) -> dict[str, Any]:
        if self.outcome.sent:
            self._commit("sent", counts={"sent": 1, **self._refusals()})
            return self._result("sent")
        if self.outcome.failed:  # refused for this message, not bounced: worth a look
            code, reply = self.last_refusal or (None, "")
            reason = f"every recipient refused: {code} {reply}"
            return self._dead(reason, code, reply, "refused")
        error = "every recipient bounced or is suppressed"
        self._commit("failed", counts=self._refusals(), error=error)
        if self.last_refusal is not None:  # bounced now, not merely suppressed from before
            code, reply = self.last_refusal
            self._report("bounce", f"every recipient bounced: {code} {reply}", code, reply)
        return self._result("failed")

    def _report(self, failure: str, message: str, code: int | None, reply: str | None) -> None:
        """One Sentry event, fingerprinted by account, failure and code (observe.sentry);
        ``reply`` is the server's reply text, or only its enhanced code."""
        report(
            failure,
            message,
            account=self.job.account,
            job_id=self.job.id,
            smtp_code=code,
            enhanced_code=enhanced_code(reply or ""),
            queue=self.queue,
            attempt=self.job.attempt,
        )

    def _result(self, state: str, **fields: str | float) -> dict[str, Any]:
        """The task's return value, which Flower and result backends show: ids and outcomes,
        never an address or a server's reply (those stay in the job's status)."""
        return {"state": state, "job_id": self.job.id, "account": self.job.account, **fields}

    def _refusals(self) -> dict[str, int]:
        """Recipients refused for good in this job: bounced now, or suppressed before."""
        suppressed = sum(1 for why in self.outcome.bounced.values() if why == "suppressed")
        return {
            "bounced": len(self.outcome.bounced) - suppressed,
            "suppressed": suppressed,
            "failed": len(self.outcome.failed),
        }

    def _commit(
        self,
        state: State,
        *,
        counts: dict[str, int],
        defer_until: float | None = None,
        retry: EmailJob | None = None,
        release_lock: bool = True,
        held_by_pause: bool = False,
        **fields: str | float,
    ) -> None:
        """The attempt's last word, in one transaction: status, deferred copy, run lock."""
        job = self.job
        pipe = self.client.pipeline(transaction=True)
        if defer_until is not None and retry is not None:
            stage_defer(pipe, job.id, retry.to_payload(), defer_until, self.queue)
            if held_by_pause:  # `mailworker resume` makes it due at once
                stage_held(pipe, job.account, job.id, defer_until)
        else:
            stage_discard(pipe, job.id)  # finished: its watchdog copy must never fire
        stage_status(
            pipe,
            job.id,
            state,
            attempt=job.attempt,
            recipients=self.outcome.recipients(job.recipients),
            **fields,
        )
        if release_lock:
            stage_let_go(pipe, job.id)
        stage_counts(pipe, job.account, counts)
        if state == "sent":
            stage_recovered(pipe, job.account)
        pipe.execute()
