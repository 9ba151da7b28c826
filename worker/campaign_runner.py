"""The bulk path: one Celery task sends a batch of personalised campaign messages.

    campaign state? → run lock → sent bitmap + suppression list → render each recipient →
    send them all concurrently over the account's pool (rate limits apply per message) →
    sent | bounced (suppressed) | retried later in a smaller batch | failed

Per-task overhead is paid once per batch, not per message. A recipient the server accepted
is marked in the campaign's sent bitmap at once, so a batch that runs again (a redelivery,
a producer that queued it twice, a retry) sends nobody a second copy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from celery import Task
from celery.exceptions import Reject

from mailworker.delivery.classify import Verdict, classify_error
from mailworker.delivery.deliver import DeliveryReport
from mailworker.delivery.errors import Backpressure, DeliveryError, RateLimited
from mailworker.delivery.outcome import Fate, plan
from mailworker.delivery.ratelimit import slow_down
from mailworker.delivery.retry import next_retry_at
from mailworker.delivery.runtime import get_runtime
from mailworker.observe.sentry import report
from mailworker.settings import Settings, get_settings
from mailworker.store import campaigns as state
from mailworker.store import suppression
from mailworker.store.client import get_redis
from mailworker.store.dead import bury
from mailworker.store.deferred import stage_defer
from mailworker.store.ledger import lock_remaining, stage_hold, stage_let_go
from mailworker.store.pauses import pause_account, paused_until, stage_held
from mailworker.tasks.app import BULK_QUEUE, SEND_BATCH_TASK
from mailworker.tasks.campaign import Renderer, load_template, render_job

log = logging.getLogger("mailworker.campaign")

Recipient = list[Any]  # [index, address, variables]


@dataclass
class BatchOutcome:
    suppressed: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    retry: list[Recipient] = field(default_factory=list)  # spends an attempt
    wait: list[Recipient] = field(default_factory=list)  # rate limit, pause: does not
    wait_until: float = 0.0
    held: bool = False  # the wait is an account pause (`mailworker resume` ends it)
    retry_hint: float | None = None


def run_batch(task: Task, payload: Any) -> dict[str, Any]:
    queue = (task.request.delivery_info or {}).get("routing_key") or BULK_QUEUE
    if not isinstance(payload, dict) or payload.get("v") != 1 or "campaign" not in payload:
        reason = "not a campaign batch this worker can read"
        kept = payload if isinstance(payload, dict) else None
        bury(str(task.request.id), kept, reason=reason, queue=queue)
        return {"state": "dead", "reason": reason}
    try:
        return BatchRun(payload, queue, get_settings()).run()
    except Exception as exc:  # noqa: BLE001 - Redis gone past its retries, or a bug
        # Never acked away: the batch goes back on the queue, and its sent bitmap keeps
        # anyone from a second copy when it runs again.
        raise Reject(f"batch {payload.get('id')}: {type(exc).__name__}", requeue=True) from exc


class BatchRun:
    def __init__(self, batch: dict[str, Any], queue: str, settings: Settings) -> None:
        self.batch = batch
        self.campaign = batch["campaign"]
        self.queue = queue
        self.settings = settings
        self.client = get_redis()
        self.outcome = BatchOutcome()
        self.account = ""

    def run(self) -> dict[str, Any]:
        batch = self.batch
        try:
            template, meta = load_template(self.campaign)
        except KeyError:
            bury(batch["id"], batch, reason="campaign not found (deleted?)", queue=self.queue)
            return {"state": "dead"}
        recipients: list[Recipient] = batch["recipients"]
        # Recipients of a re-queued batch were counted as deferred; they are not any more.
        waiting = len(recipients) if batch.get("waited") else 0
        self.account = meta["account"]
        stopped = self._stopped(meta.get("state", "running"), recipients, waiting)
        if stopped is not None:
            return stopped
        pending = self._pending(recipients, waiting)
        if pending is None:
            return {"state": "deferred", "reason": "another copy of this batch is running"}
        try:
            self._send(template, self.account, pending)
        except Exception:  # noqa: BLE001 - never lose a batch: retry whoever is not marked sent
            log.exception("batch %s failed; retrying its unsent recipients", batch["id"])
            self.outcome.failed.clear()
            self.outcome.wait.clear()
            self.outcome.retry = pending
        finally:
            self._commit(waiting)
        return {"state": "done", "failed": len(self.outcome.failed)}

    def _stopped(
        self, state: str, recipients: list[Recipient], waiting: int
    ) -> dict[str, Any] | None:
        """Cancelled, paused campaign or paused account: nothing is sent now."""
        if state == "cancelled":
            self._count(cancelled=len(recipients), deferred=-waiting)
            return {"state": "cancelled"}
        if state == "paused":  # the marketer's hold: no age limit
            self._requeue(recipients, time.time() + 2, waiting=waiting, ages=False)
            return {"state": "paused"}
        pause = paused_until(self.account, client=self.client)
        if pause is not None:  # the account's password or quota is being fixed: wait
            self._requeue(recipients, pause[0], waiting=waiting, held=True)
            return {"state": "deferred", "reason": f"account {self.account!r} paused"}
        return None

    def _pending(self, recipients: list[Recipient], waiting: int) -> list[Recipient] | None:
        """Take the batch's run lock; who is neither sent already nor suppressed (one trip)."""
        batch = self.batch
        lock_seconds = self.settings.smtp_timeout * 4 + 60 + len(recipients)
        pipe = self.client.pipeline(transaction=False)
        stage_hold(pipe, batch["id"], lock_seconds)
        state.stage_sent_lookup(pipe, self.campaign, [index for index, _, _ in recipients])
        suppression.stage_reasons(pipe, [address for _, address, _ in recipients])
        held, *bits, flags = pipe.execute()
        if not held:
            wait = lock_remaining(batch["id"], client=self.client) + 1
            self._requeue(recipients, time.time() + wait, waiting=waiting)
            return None
        pending = []
        for recipient, bit, flag in zip(recipients, bits, flags, strict=True):
            if bit:
                continue  # sent (and counted) by an earlier run of this batch
            if flag is not None:
                self.outcome.suppressed += 1
            else:
                pending.append(recipient)
        return pending

    def _send(self, template: Any, account: str, pending: list[Recipient]) -> None:
        renderer, jobs, by_job = Renderer(template), [], {}
        for recipient in pending:
            index, address, variables = recipient
            try:
                job = render_job(
                    self.campaign,
                    template,
                    renderer,
                    account,
                    index,
                    address,
                    variables,
                    self.settings,
                )
            except ValueError as exc:
                self.outcome.failed[index] = f"could not render: {exc}"
                continue
            jobs.append(job)
            by_job[job.id] = recipient
        if not jobs:
            return
        runtime = get_runtime()

        async def mark_sent(job_id: str, _: tuple[str, ...]) -> None:
            # The bit and the count move together, once, even if this batch runs again.
            await state.mark_sent(runtime.async_redis(), self.campaign, by_job[job_id][0])

        results = runtime.deliver_batch(jobs, mark_sent, self.settings)
        for job, result in zip(jobs, results, strict=True):
            self._settle(by_job[job.id], result)

    def _settle(self, recipient: Recipient, result: DeliveryReport | BaseException) -> None:
        index = recipient[0]
        outcome = self.outcome
        whole_message = False
        if isinstance(result, DeliveryReport):
            if result.accepted:
                return  # marked and counted the moment the server said 250
            refusal = next(iter(result.refused.values()))
            verdict = refusal.verdict
            reason = f"{refusal.code} {refusal.message}"
        elif isinstance(result, RateLimited | Backpressure):
            outcome.wait.append(recipient)
            wait = result.wait if isinstance(result, RateLimited) else 2.0
            outcome.wait_until = max(outcome.wait_until, time.time() + wait)
            return
        elif isinstance(result, DeliveryError):
            verdict, reason, whole_message = classify_error(result), str(result), True
        elif isinstance(result, ValueError | TypeError | UnicodeError):
            # The rendering could not be built into a safe message: nothing was sent, and
            # another try would build the same bytes (worker.header_check, worker.mime).
            outcome.failed[index] = f"unbuildable: {type(result).__name__}"
            return
        else:
            log.error("batch %s: unexpected error", self.batch["id"], exc_info=result)
            outcome.retry.append(recipient)
            return
        self._apply(recipient, verdict, reason, whole_message)

    def _apply(
        self, recipient: Recipient, verdict: Verdict, reason: str, whole_message: bool
    ) -> None:
        """The same plan as a transactional job's (worker.outcome), per campaign recipient."""
        index, address, _ = recipient
        outcome, chosen = self.outcome, plan(verdict, whole_message=whole_message)
        if chosen.slow_down:
            slow_down(self.account, self.settings.limiter.throttle_cooldown)
        if chosen.fate is Fate.BOUNCED:
            suppression.suppress(address, f"hard bounce: {reason}", client=self.client)
            outcome.failed[index] = f"bounced: {reason}"
        elif chosen.fate is Fate.FAILED:
            outcome.failed[index] = f"refused: {reason}"
        elif chosen.fate is Fate.WAIT:
            seconds = max(self.settings.account_pause_seconds, verdict.retry_after or 0)
            until, _ = pause_account(self.account, seconds, reason, client=self.client)
            outcome.wait.append(recipient)
            outcome.wait_until = max(outcome.wait_until, until)
            outcome.held = True
        else:
            outcome.retry.append(recipient)
            if verdict.retry_after:
                outcome.retry_hint = max(outcome.retry_hint or 0, verdict.retry_after)

    def _commit(self, waiting: int) -> None:
        """Counters, errors, retries and the lock: one transaction."""
        outcome, batch = self.outcome, self.batch
        attempt = batch.get("attempt", 1)
        pipe = self.client.pipeline(transaction=True)
        retry_due = None
        if outcome.retry:
            created = batch.get("created_at", time.time())
            retry_due = next_retry_at(
                attempt, created, self.settings.retry, hint=outcome.retry_hint
            )
            if retry_due is None:
                for index, *_ in outcome.retry:
                    outcome.failed[index] = f"gave up after {attempt} attempts"
            else:
                self._stage_requeue(pipe, outcome.retry, retry_due, attempt + 1, ".r")
        if outcome.wait and self._too_old(outcome.wait_until):
            for index, *_ in outcome.wait:
                outcome.failed[index] = "waited longer than RETRY_MAX_AGE"
            outcome.wait = []
        if outcome.wait:
            self._stage_requeue(
                pipe, outcome.wait, outcome.wait_until, attempt, ".w", held=outcome.held
            )
        deferred = (len(outcome.retry) if retry_due else 0) + len(outcome.wait)
        self._stage_count(
            pipe,
            suppressed=outcome.suppressed,
            failed=len(outcome.failed),
            deferred=deferred - waiting,
        )
        state.stage_errors(pipe, self.campaign, outcome.failed)
        stage_let_go(pipe, batch["id"])
        pipe.execute()
        self._report(attempt)

    def _report(self, attempt: int) -> None:
        """One Sentry event per batch whose recipients failed for another reason than a
        bounce (bounces are a campaign's normal wear: counted and suppressed, not alerts)."""
        failures = [why for why in self.outcome.failed.values() if not why.startswith("bounced")]
        if failures:
            report(
                "campaign_failed",
                f"{len(failures)} recipient(s) of a campaign batch failed; first: {failures[0]}",
                account=self.account,
                campaign=self.campaign,
                queue=self.queue,
                attempt=attempt,
                job_id=self.batch["id"],
            )

    def _requeue(
        self,
        recipients: list[Recipient],
        due: float,
        *,
        waiting: int,
        held: bool = False,
        ages: bool = True,
    ) -> None:
        """Wait without spending an attempt; a wait past RETRY_MAX_AGE fails them instead."""
        pipe = self.client.pipeline(transaction=True)
        if ages and self._too_old(due):
            failed = {index: "waited longer than RETRY_MAX_AGE" for index, *_ in recipients}
            state.stage_errors(pipe, self.campaign, failed)
            self._stage_count(pipe, failed=len(recipients), deferred=-waiting)
        else:
            attempt = self.batch.get("attempt", 1)
            self._stage_requeue(pipe, recipients, due, attempt, ".w", held=held)
            self._stage_count(pipe, deferred=len(recipients) - waiting)
        pipe.execute()

    def _too_old(self, due: float) -> bool:
        created = self.batch.get("created_at")
        if not created:
            return False
        return due - float(created) > self.settings.retry.max_age

    def _stage_requeue(
        self,
        pipe: Any,
        recipients: list[Recipient],
        due: float,
        attempt: int,
        suffix: str,
        *,
        held: bool = False,
    ) -> None:
        base = self.batch["id"].split(".")[0]
        retry = {
            **self.batch,
            "id": f"{base}{suffix}{attempt}-{int(due * 1000)}",
            "attempt": attempt,
            "waited": True,
            "created_at": self.batch.get("created_at", time.time()),
            "recipients": recipients,
        }
        stage_defer(pipe, retry["id"], retry, due, self.queue, task=SEND_BATCH_TASK)
        if held:  # `mailworker resume` makes it due at once
            stage_held(pipe, self.account, retry["id"], due)

    def _count(self, **counts: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        self._stage_count(pipe, **counts)
        pipe.execute()

    def _stage_count(self, pipe: Any, **counts: int) -> None:
        state.stage_counts(pipe, self.campaign, **counts)
