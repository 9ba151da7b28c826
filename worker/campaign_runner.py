"""The bulk path: one Celery task sends a batch of personalised campaign messages.

    claim the batch (lease, sent marks, suppression list: one round trip) → campaign
    cancelled, paused or account paused? → render each recipient → send them concurrently
    over the account's pool (rate limits apply per message; the campaign's state is asked
    again, at most 250 ms old, right before each message) → settle: done | parked |
    retried later in a child batch | failed

A batch is a job of the lifecycle (store.lifecycle) like any other: leased while it runs,
returned by the reaper if its worker dies, and a stale copy of its message does nothing. A
paused campaign parks its batches (no task runs until it is resumed). A recipient the server
accepted is marked at once, so a batch that runs again sends nobody a second copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from celery import Task
from celery.exceptions import Reject

from mailworker.delivery.classify import Verdict, classify_error
from mailworker.delivery.crashpoint import crash_point
from mailworker.delivery.deliver import DeliveryReport
from mailworker.delivery.errors import Backpressure, DeliveryError, RateLimited, Stopped
from mailworker.delivery.outcome import Fate, plan
from mailworker.delivery.ratelimit import slow_down
from mailworker.delivery.retry import next_retry_at
from mailworker.delivery.runtime import get_runtime
from mailworker.observe.sentry import report
from mailworker.settings import Settings, get_settings
from mailworker.store import campaigns as state
from mailworker.store import keys, lifecycle, suppression
from mailworker.store.client import execute_scripted, get_redis
from mailworker.store.dead import bury, letter
from mailworker.store.events import Event, encode
from mailworker.store.lifecycle import Settlement, State
from mailworker.store.pauses import pause_account, paused_until, stage_held
from mailworker.tasks.app import BULK_QUEUE, SEND_BATCH_TASK
from mailworker.tasks.campaign import Renderer, load_template, render_job
from mailworker.tasks.send import put
from mailworker.worker.batch_outcome import BatchOutcome, Recipient, StopCheck
from mailworker.worker.failing import note_transient
from mailworker.worker.leases import keeper, new_owner

log = logging.getLogger("mailworker.campaign")


def run_batch(task: Task, payload: Any) -> dict[str, Any]:
    queue = (task.request.delivery_info or {}).get("routing_key") or BULK_QUEUE
    if not isinstance(payload, dict) or payload.get("v") != 1 or "campaign" not in payload:
        reason = "not a campaign batch this worker can read"
        kept = payload if isinstance(payload, dict) else None
        bury(str(task.request.id), kept, reason=reason, queue=queue)
        return {"state": "dead", "reason": reason}
    run = BatchRun(payload, queue, get_settings())
    try:
        return run.run()
    except Exception as exc:  # noqa: BLE001 - Redis gone past its retries, or a bug
        # Never acked away: a claimed batch comes back with its lease, an unclaimed one
        # goes back on the queue, and the sent marks keep anyone from a second copy.
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
        self.owner = new_owner()
        recipients: list[Recipient] = batch["recipients"]
        self.recipients = recipients
        # Recipients of a child batch were counted as deferred; they are not any more.
        self.waiting = len(recipients) if batch.get("waited") else 0

    def run(self) -> dict[str, Any]:
        crash_point("taken")
        pending = self._claim()
        if pending is None:
            return {"state": "duplicate"}
        crash_point("claimed")
        bound = self.settings.smtp_timeout * 4 + 60 + len(self.recipients)
        keeper().hold(self.batch["id"], self.owner, bound)
        try:
            return self._run(pending)
        finally:
            keeper().release(self.batch["id"])

    def _run(self, pending: list[Recipient]) -> dict[str, Any]:
        try:
            template, meta = load_template(self.campaign)
        except KeyError:
            reason = "campaign not found (deleted?)"
            dead = letter(self.batch["id"], self.batch, reason=reason, queue=self.queue)
            self._settle("failed", {}, dead_letter=dead)
            return {"state": "dead"}
        self.account = meta["account"]
        stopped = self._stopped(meta.get("state", "running"), pending)
        if stopped is not None:
            return stopped
        try:
            self._send(template, pending)
        except Exception:  # noqa: BLE001 - never lose a batch: retry whoever is not marked sent
            log.exception("batch %s failed; retrying its unsent recipients", self.batch["id"])
            self.outcome = BatchOutcome(suppressed=self.outcome.suppressed, retry=pending)
        self._commit()
        return {"state": "done", "failed": len(self.outcome.failed)}

    def _claim(self) -> list[Recipient] | None:
        """Claim the batch; who is neither sent already nor suppressed (one round trip)."""
        batch, lease = self.batch, self.settings.recovery.lease
        addresses = [address for _, address, _ in self.recipients]
        lineage = batch["id"].split(".")[0]  # a batch and its retry children

        def build(pipe: Any) -> None:
            lifecycle.stage_claim(pipe, batch["id"], self.owner, lease, queue=self.queue)
            state.stage_claim_recipients(pipe, self.campaign, lineage, addresses)
            suppression.stage_campaign_check(pipe, addresses, batch.get("list_id"))

        reply, claims, *lookups = execute_scripted(self.client, build)
        flags = suppression.campaign_blocked(lookups)
        claim = lifecycle.read_claim(reply)
        if claim.verdict == "skip" and claim.state == "unknown":  # queued before 0.2: adopt
            claim = lifecycle.claim(
                batch["id"], self.owner, lease, queue=self.queue, adopt=batch, client=self.client
            )
        if claim.verdict != "claimed":
            log.info("batch %s: %s %s; this copy does nothing", batch["id"], claim.verdict,
                     claim.state)  # fmt: skip
            return None
        pending = []
        for recipient, claimed, flag in zip(self.recipients, claims, flags, strict=True):
            if claimed == state.SENT:
                continue  # sent (and counted) by an earlier run of this batch
            if claimed == state.ELSEWHERE:
                self.outcome.duplicate += 1  # another batch has this address (a re-run)
            elif flag is not None:
                self.outcome.suppressed += 1
            else:
                pending.append(recipient)
        return pending

    def _stopped(self, campaign_state: str, pending: list[Recipient]) -> dict[str, Any] | None:
        """Cancelled or paused campaign, or paused account: nothing is sent now."""
        if campaign_state == "cancelled":
            self.outcome.cancelled = pending
            self._commit()
            return {"state": "cancelled"}
        if campaign_state == "paused":  # the marketer's hold: parked until resumed
            self.outcome.parked = pending
            self._commit()
            return {"state": "paused"}
        pause = paused_until(self.account, client=self.client)
        if pause is not None:  # the account's password or quota is being fixed: wait
            self.outcome.wait = pending
            self.outcome.wait_until, self.outcome.held = pause[0], True
            self._commit()
            return {"state": "deferred", "reason": f"account {self.account!r} paused"}
        return None

    def _send(self, template: Any, pending: list[Recipient]) -> None:
        renderer, jobs, by_job = Renderer(template), [], {}
        for recipient in pending:
            index, address, variables = recipient
            try:
                job = render_job(
                    self.campaign, template, renderer, self.account, index, address, variables,
                    self.settings,
                )  # fmt: skip
            except ValueError as exc:
                self.outcome.failed[index] = f"could not render: {exc}"
                continue
            jobs.append(job)
            by_job[job.id] = recipient
        if not jobs:
            return
        runtime = get_runtime()

        events_on = bool(self.settings.events.task)

        async def mark_sent(job_id: str, _: tuple[str, ...]) -> None:
            # The bit and the count move together, once, even if this batch runs again.
            address = by_job[job_id][1]
            events = encode([Event("sent", job_id, address, self.account, self.campaign,
                                   code="250")]) if events_on else ""  # fmt: skip
            await state.mark_sent(runtime.async_redis(), self.campaign, address,
                                  account=self.account, events=events)  # fmt: skip

        check = StopCheck(self.campaign, runtime.async_redis)
        results = runtime.deliver_batch(jobs, mark_sent, self.settings, proceed=check)
        for job, result in zip(jobs, results, strict=True):
            self._settle_one(by_job[job.id], result)

    def _settle_one(self, recipient: Recipient, result: DeliveryReport | BaseException) -> None:
        index = recipient[0]
        outcome = self.outcome
        whole_message = False
        if isinstance(result, DeliveryReport):
            if result.accepted:
                return  # marked and counted the moment the server said 250
            refusal = next(iter(result.refused.values()))
            verdict = refusal.verdict
            reason = f"{refusal.code} {refusal.message}"
        elif isinstance(result, Stopped):  # paused or cancelled while the batch ran
            (outcome.cancelled if result.why == "cancelled" else outcome.parked).append(recipient)
            return
        elif isinstance(result, RateLimited | Backpressure):
            outcome.wait.append(recipient)
            wait = result.wait if isinstance(result, RateLimited) else 2.0
            outcome.wait_until = max(outcome.wait_until, time.time() + wait)
            return
        elif isinstance(result, DeliveryError):
            verdict, reason, whole_message = classify_error(result), str(result), True
        elif isinstance(result, ValueError | TypeError | UnicodeError):
            # The rendering could not be built into a safe message: nothing was sent, and
            # another try would build the same bytes (delivery.header_check, delivery.mime).
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
        """The same plan as a transactional job's (delivery.outcome), per campaign recipient."""
        index, address, _ = recipient
        outcome, chosen = self.outcome, plan(verdict, whole_message=whole_message)
        if chosen.slow_down:
            slow_down(self.account, self.settings.limiter.throttle_cooldown)
        if chosen.fate is Fate.BOUNCED:
            suppression.suppress(
                address, reason, kind="hard-bounce", source="smtp", client=self.client
            )
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
            if chosen.note_failing and outcome.failing is None:
                outcome.failing = (reason, verdict.code)
            if verdict.retry_after:
                outcome.retry_hint = max(outcome.retry_hint or 0, verdict.retry_after)

    def _commit(self) -> None:
        """Children for the retried and the waiting, then the batch's own settle step with
        its counters and errors; a crash between them makes the same children again."""
        outcome, batch = self.outcome, self.batch
        attempt = batch.get("attempt", 1)
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
                self._child("r", outcome.retry, retry_due, attempt + 1)
        if outcome.wait and self._too_old(outcome.wait_until):
            for index, *_ in outcome.wait:
                outcome.failed[index] = "waited longer than RETRY_MAX_AGE"
            outcome.wait = []
        if outcome.wait:
            self._child("w", outcome.wait, outcome.wait_until, attempt, held=outcome.held)
        parked = len(outcome.parked)
        deferred = (len(outcome.retry) if retry_due else 0) + len(outcome.wait) + parked
        counts = {
            "suppressed": outcome.suppressed,
            "failed": len(outcome.failed),
            "cancelled": len(outcome.cancelled),
            "duplicate": outcome.duplicate,
            "deferred": deferred - self.waiting,
        }
        if parked:
            self._park(counts)
        else:
            self._settle("sent", counts)
        if outcome.failing is not None:
            reason, code = outcome.failing
            note_transient(self.account, self.settings.observability.failing_after, reason,
                           code=code, queue=self.queue, client=self.client)  # fmt: skip
        self._report(attempt)

    def _park(self, counts: dict[str, int]) -> None:
        """Park the batch with its unsent recipients until the campaign is resumed."""
        parked = {**self.batch, "recipients": self.outcome.parked, "waited": True}
        self._settle(
            "paused",
            counts,
            payload=parked,
            held_in=keys.campaign(self.campaign, "parked"),
            held_for=self.settings.retention.campaigns,
        )

    def _settle(
        self,
        new_state: State,
        counts: dict[str, int],
        *,
        payload: dict[str, Any] | None = None,
        dead_letter: dict[str, str] | None = None,
        held_in: str | None = None,
        held_for: float = 3600.0,
    ) -> None:
        fields = {"payload": json.dumps(payload)} if payload is not None else {}
        done, _ = lifecycle.settle(
            self.batch["id"],
            self.owner,
            Settlement(
                new_state,
                self.account,
                fields,
                counts,
                held_in=held_in,
                held_for=held_for,
                dead_letter=dead_letter,
                counters=keys.campaign(self.campaign, "counts"),
                notes_in=keys.campaign(self.campaign, "errors"),
                notes={str(index): why for index, why in self.outcome.failed.items()},
                events=self.outcome.failure_events(self.campaign, self.account, self.recipients)
                if self.settings.events.task
                else "",
                keep_for=max(lifecycle.RECORD_TTL, self.settings.retention.campaigns),
            ),
            dead_retention=self.settings.retention.dead_letters,
            client=self.client,
        )
        if done:
            crash_point("settled")
            state.keep(self.campaign, client=self.client)
        else:
            log.warning("batch %s: lease lost before settling", self.batch["id"])

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

    def _too_old(self, due: float) -> bool:
        created = self.batch.get("created_at")
        if not created:
            return False
        return due - float(created) > self.settings.retry.max_age

    def _child(
        self,
        kind: str,
        recipients: list[Recipient],
        due: float,
        attempt: int,
        *,
        held: bool = False,
    ) -> None:
        """A batch of the recipients to try later; its id derives from this batch's, so a
        rerun of this batch makes the same child (and finds it exists)."""
        base = self.batch["id"].split(".")[0]
        suffix = hashlib.sha1(f"{self.batch['id']}/{kind}".encode()).hexdigest()[:12]
        child = {
            **self.batch,
            "id": f"{base}.{kind}{suffix}",
            "attempt": attempt,
            "waited": True,
            "created_at": self.batch.get("created_at", time.time()),
            "recipients": recipients,
        }
        put(child["id"], child, self.queue, self.account, task=SEND_BATCH_TASK, send_at=due)
        if held:  # `mailworker resume` makes it due at once
            pipe = self.client.pipeline(transaction=False)
            stage_held(pipe, self.account, child["id"], due)
            pipe.execute()
