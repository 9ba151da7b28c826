"""The Celery adapter: claim the job, run the pipeline, settle the outcome as a state.

    claim (lease, sent-ledger, suppression list, account pause: one round trip) →
    deliver (rate limit, pooled send) → classify each reply (delivery.classify) →
    plan it (delivery.outcome) → settle: sent | deferred | paused | failed (dead letter)

A job never ends silently and moves only through store.lifecycle's atomic steps: a copy of
the message that finds the job sending, ended or waiting does nothing. Recipients that got a
250 go into the sent-ledger before anything else, so a rescued or retried job never sends
them a second copy; retries wait in Redis, never as an ETA held in a worker's memory.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from typing import Any

from celery import Task
from celery.exceptions import Reject

from mailworker.delivery.classify import Verdict, account_advice, classify_error, enhanced_code
from mailworker.delivery.crashpoint import crash_point
from mailworker.delivery.deliver import DeliveryReport
from mailworker.delivery.errors import Backpressure, DeliveryError, Expired, RateLimited
from mailworker.delivery.outcome import Fate, fails_over, plan
from mailworker.delivery.retry import next_retry_at
from mailworker.delivery.runtime import get_runtime
from mailworker.observe.sentry import report
from mailworker.settings import Settings, SettingsError, get_settings
from mailworker.store import suppression
from mailworker.store.client import get_redis
from mailworker.store.dead import letter
from mailworker.store.job import EmailJob, UndecodableJob
from mailworker.store.ledger import release_idempotency_key
from mailworker.store.lifecycle import State
from mailworker.store.pauses import pause_account
from mailworker.tasks.app import TRANSACTIONAL_QUEUE
from mailworker.worker.attempt import (
    Outcome,
    attempt_bound,
    claim_attempt,
    log_attempt,
    settle_attempt,
)
from mailworker.worker.failing import note_transient, slow_down_if_throttled
from mailworker.worker.leases import keeper, new_owner
from mailworker.worker.metrics import RATE_LIMIT_WAITS
from mailworker.worker.routes import accounts_for, failing_for
from mailworker.worker.undecodable import bury_undecodable

log = logging.getLogger("mailworker.delivery")

# A job whose worker died this many times while sending it is a poison message (it
# crashes or exhausts the worker): it is dead-lettered instead of killing the next one.
MAX_RESCUES = 5


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
        self.owner = new_owner()
        self.claimed = False
        self.via = job.account  # the account this attempt goes through (worker.routes)

    def run_safely(self) -> dict[str, Any]:
        """:meth:`run`, and an error that escapes it never acks the job away."""
        try:
            return self.run()
        except Exception as exc:  # noqa: BLE001 - Redis gone past its retries, or a bug
            log.error("job %s: %s escaped the attempt", self.job.id, type(exc).__name__)
            try:  # an attempt spent, so a bug ends in a dead letter, not a loop
                if self.claimed:
                    return self._retry(f"unexpected {type(exc).__name__} in the worker", None)
            except Exception:  # noqa: BLE001 - Redis is still away: the lease returns it
                pass
            raise Reject(f"job {self.job.id}: {type(exc).__name__}", requeue=True) from exc

    def run(self) -> dict[str, Any]:
        crash_point("taken")
        claim, blocked, pause = claim_attempt(
            self.client, self.job, self.owner, self.queue, self.settings
        )
        if claim.verdict != "claimed":
            # A stale copy of the message: another worker holds the job under a live lease
            # (its lease returns it if that worker dies), or it has ended, or it waits.
            log.info(
                "job %s: %s (%s); this copy does nothing",
                self.job.id,
                claim.verdict,
                claim.state or f"lease {claim.busy_for:.0f} s",
            )
            return self._result("duplicate", found=claim.state or "sending")
        self.claimed = True
        crash_point("claimed")
        if claim.payload is not None:  # the record's copy: its attempt and sent recipients
            self.job = EmailJob.from_payload(claim.payload)
        self.outcome.sent.update(claim.sent)
        if self.job.expires_at is not None and time.time() >= self.job.expires_at:
            return self._expire("its expiry came before a server accepted it")
        if claim.rescues > MAX_RESCUES:
            reason = f"its worker died {claim.rescues} times while sending it"
            return self._dead(reason, None, "", "rescued too often")
        keeper().hold(self.job.id, self.owner, attempt_bound(self.job, self.settings))
        try:
            return self._attempt(blocked, pause)
        finally:
            keeper().release(self.job.id)

    def _attempt(self, blocked: set[str], pause: tuple[float, str] | None) -> dict[str, Any]:
        job = self.job
        self.outcome.bounced.update({r: "suppressed" for r in blocked})
        pending = tuple(
            r for r in job.recipients if r not in self.outcome.sent and r not in blocked
        )
        if not pending:
            return self._finish()  # redelivered after a crash, or everyone suppressed
        routes = accounts_for(job.account, self.settings, pause, self.client)
        if not routes and pause is not None:
            return self._defer(
                pause[0],
                f"account {job.account!r} paused: {pause[1]}",
                consume_attempt=False,
                held_by_pause=True,
            )
        for index, via in enumerate(routes):
            self.via = via
            result = self._through(via, blocked, last=index == len(routes) - 1)
            if result is not None:
                return result
        raise AssertionError("the last account always settles the attempt")

    def _through(self, via: str, blocked: set[str], *, last: bool) -> dict[str, Any] | None:
        """One account's try: the attempt's result, or ``None`` to hand it to the next."""
        job = replace(self.job, account=via, done=tuple(self.outcome.sent | blocked))
        started = time.monotonic()
        try:
            report = get_runtime().deliver(job)
        except SettingsError as exc:  # this worker lacks the account: wait for one that has it
            return self._defer(
                time.time() + self.settings.account_pause_seconds, str(exc), consume_attempt=False
            )
        except Expired as exc:  # the waits for a session or a permit ran past its expiry
            return self._expire(str(exc))
        except RateLimited as exc:  # a quota is used up: wait in Redis, not in this worker
            RATE_LIMIT_WAITS.labels(via).inc()
            return self._defer(time.time() + exc.wait, str(exc), consume_attempt=False)
        except Backpressure as exc:  # every connection stayed busy: not the message's fault
            log_attempt(job, "busy", started, None)
            return self._defer(time.time() + random.uniform(1, 3), str(exc), consume_attempt=False)
        except DeliveryError as exc:
            verdict = classify_error(exc)
            log_attempt(job, verdict.decision.value, started, exc.code)
            # The failing clock is read only when there is an account to hand the job to.
            if not last and fails_over(verdict, exc.stage, after=self.settings.failover_after,
                                       failing_for=failing_for(via, self.client)):  # fmt: skip
                self._hand_on(verdict, str(exc), exc.code)
                return None
            return self._whole_message_failed(verdict, str(exc), exc.reply)
        except (ValueError, TypeError, UnicodeError) as exc:
            log.exception("job %s could not be built into a message", job.id)
            return self._dead(
                f"message could not be built: {type(exc).__name__}", None, "", "unbuildable"
            )
        log_attempt(job, "delivered" if not report.refused else "partial", started, 250)
        return self._settle(report)

    def _hand_on(self, verdict: Verdict, reason: str, code: int | None) -> None:
        """The account cannot take the job: pause it (account trouble) or note it failing,
        as if the job had stayed, and let the next account try at once."""
        if plan(verdict, whole_message=True).pause_account:
            self._pause(verdict, reason)
        else:
            note_transient(self.via, self.settings.observability.failing_after, reason,
                           code=code, queue=self.queue, client=self.client)  # fmt: skip
        log.warning("job %s: account %s cannot take it (%s); trying the next account",
                    self.job.id, self.via, verdict.decision.value)  # fmt: skip

    def _settle(self, report: DeliveryReport) -> dict[str, Any]:
        self.outcome.sent.update(report.accepted)
        account_trouble: Verdict | None = None
        for recipient, refusal in report.refused.items():
            verdict = refusal.verdict
            chosen = plan(verdict)
            reason = f"{refusal.code} {refusal.message}"
            self.last_refusal = (refusal.code, refusal.message)
            if chosen.slow_down:
                slow_down_if_throttled(self.via, verdict, self.settings)
            if chosen.fate is Fate.BOUNCED:
                self.outcome.bounced[recipient] = reason
                suppression.suppress(recipient, reason, kind="hard-bounce", source="smtp")
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
            slow_down_if_throttled(self.via, verdict, self.settings)
        if chosen.fate is Fate.RETRY:
            return self._retry(reason, verdict.retry_after, verdict.code, reply)
        if chosen.fate is Fate.WAIT:
            return self._pause_and_defer(verdict, reason)
        return self._dead(reason, verdict.code, reply, verdict.decision.value)

    def _pause_and_defer(self, verdict: Verdict, reason: str) -> dict[str, Any]:
        until = self._pause(verdict, reason)
        return self._defer(until, reason, consume_attempt=False, held_by_pause=True)

    def _pause(self, verdict: Verdict, reason: str) -> float:
        """Pause the account that refused (reported once per pause); when it ends."""
        seconds = max(self.settings.account_pause_seconds, verdict.retry_after or 0)
        until, new = pause_account(self.via, seconds, reason)
        account = self.settings.accounts.get(self.via)
        fix = account_advice(verdict, self.via, account.variable if account else "SMTP_URL")
        log.warning("account %s paused for %.0f s: %s", self.via, seconds, fix)
        if new:
            message = f"account {self.via!r} paused for {seconds:.0f} s: {reason}. {fix}"
            self._report("paused", message, verdict.code, verdict.enhanced)
        return until

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
            self.via,
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
        held_by_pause: bool = False,
    ) -> dict[str, Any]:
        job = self.job
        if job.expires_at is not None and due >= job.expires_at:
            # It would wait past its expiry: it ends now rather than arrive worthless.
            return self._expire(f"it would wait past its expiry: {reason}")
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
        settled = self._settle_as(
            "paused" if held_by_pause else "deferred",
            counts={"deferred": 1},
            # seconds on the Redis server's clock: a worker's fast clock moves nothing early
            delay=max(0.0, due - time.time()),
            held=held_by_pause,
            payload=retry,
            error=reason,
        )
        return self._result("deferred", next_attempt_at=settled or due)

    def _dead(self, reason: str, code: int | None, reply: str, failure: str) -> dict[str, Any]:
        job = self.job
        dead = letter(
            job.id, job.to_payload(), reason=reason, queue=self.queue, code=code, reply=reply
        )
        self._settle_as(
            "failed", counts={"dead": 1, **self.outcome.refusals()}, dead_letter=dead, error=reason
        )
        if job.idempotency_key is not None:
            release_idempotency_key(job.idempotency_key, job.id)
        log.error("job %s dead-lettered (%s)", job.id, failure)
        self._report(failure, f"email job dead-lettered ({failure}): {reason}", code, reply)
        return self._result("dead", failure=failure)

    def _expire(self, reason: str) -> dict[str, Any]:
        """Ends ``expired``: no dead letter, no Sentry event; the caller asked for it."""
        self._settle_as("expired", counts={"expired": 1}, error=reason)
        log.info("job %s expired: %s", self.job.id, reason)
        return self._result("expired")

    def _finish(self) -> dict[str, Any]:
        if self.outcome.sent:
            self._settle_as("sent", counts={"sent": 1, **self.outcome.refusals()})
            return self._result("sent")
        if self.outcome.failed:  # refused for this message, not bounced: worth a look
            code, reply = self.last_refusal or (None, "")
            reason = f"every recipient refused: {code} {reply}"
            return self._dead(reason, code, reply, "refused")
        error = "every recipient bounced or is suppressed"
        self._settle_as("failed", counts=self.outcome.refusals(), error=error)
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
            account=self.via,
            job_id=self.job.id,
            smtp_code=code,
            enhanced_code=enhanced_code(reply or ""),
            queue=self.queue,
            attempt=self.job.attempt,
        )

    def _result(self, state: str, **fields: str | float) -> dict[str, Any]:
        """The task's return value, which Flower and result backends show: ids and outcomes,
        never an address or a server's reply (those stay in the job's status)."""
        return {"state": state, "job_id": self.job.id, "account": self.via, **fields}

    def _settle_as(
        self,
        state: State,
        *,
        counts: dict[str, int],
        delay: float | None = None,
        held: bool = False,
        payload: EmailJob | None = None,
        dead_letter: dict[str, str] | None = None,
        **fields: str,
    ) -> float | None:
        """The attempt's last word (worker.attempt.settle_attempt); the due time of a wait."""
        return settle_attempt(
            self.client, self.settings, self.owner, replace(self.job, account=self.via),
            self.outcome, state, counts=counts, delay=delay, held=held, payload=payload,
            dead_letter=dead_letter, fields=fields,
        )  # fmt: skip
