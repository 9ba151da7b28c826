"""One attempt of a transactional job: its claim, who got what, and its line in the log."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from functools import partial

import redis

from mailworker.delivery.classify import Verdict
from mailworker.delivery.crashpoint import crash_point
from mailworker.settings import Settings
from mailworker.store import keys, lifecycle
from mailworker.store.addresses import normalize_address
from mailworker.store.events import Event, EventType, encode
from mailworker.store.job import EmailJob
from mailworker.store.lifecycle import Claim, Settlement, State
from mailworker.store.pauses import read_pause
from mailworker.worker.metrics import SEND_SECONDS, count_outcomes

log = logging.getLogger("mailworker.delivery")


@dataclass
class Outcome:
    """Per-recipient bookkeeping for one attempt."""

    sent: set[str] = field(default_factory=set)
    bounced: dict[str, str] = field(default_factory=dict)  # suppressed, now or before
    failed: dict[str, str] = field(default_factory=dict)  # this message only, not suppressed
    retry: dict[str, Verdict] = field(default_factory=dict)

    def recipients(self, pending: tuple[str, ...]) -> dict[str, str]:
        states = {r: "pending" for r in pending}
        states.update({r: "sent" for r in self.sent})
        states.update({r: f"bounced {why}" for r, why in self.bounced.items()})
        states.update({r: f"failed {why}" for r, why in self.failed.items()})
        return states

    def refusals(self) -> dict[str, int]:
        """Recipients refused for good in this job: bounced now, or suppressed before."""
        suppressed = sum(1 for why in self.bounced.values() if why == "suppressed")
        return {
            "bounced": len(self.bounced) - suppressed,
            "suppressed": suppressed,
            "failed": len(self.failed),
        }

    def events(self, job: EmailJob, state: str) -> list[Event]:
        """One event per recipient for an attempt that ends in ``state``: sent, bounced or
        failed as decided; the rest deferred (waiting) or failed (the job ended)."""
        found, tags = [], dict(job.tags)
        for address, where in self.recipients(job.recipients).items():
            outcome, _, why = where.partition(" ")
            kind: EventType = "bounced" if outcome == "bounced" else "sent"
            if outcome == "pending":
                kind = "deferred" if state in ("deferred", "paused", "queued") else "failed"
                kind = "expired" if state == "expired" else kind
            elif outcome == "failed" or why == "suppressed":
                kind = "failed"
            code = "250" if kind == "sent" else why.split(" ", 1)[0] if why[:1].isdigit() else ""
            found.append(Event(kind, job.id, address, job.account, code=code,
                               detail=why[:200], tags=tags, attempt=job.attempt))  # fmt: skip
        return found


def log_attempt(job: EmailJob, outcome: str, started: float, code: int | None) -> None:
    """One line per delivery attempt: ids, outcome, code, latency; never addresses."""
    seconds = time.monotonic() - started
    SEND_SECONDS.labels(job.account).observe(seconds)
    fields = {
        "job_id": job.id,
        "account": job.account,
        "outcome": outcome,
        "smtp_code": code,
        "attempt": job.attempt,
        "latency_ms": round(seconds * 1000, 1),
    }
    log.info(
        "attempt job=%s account=%s outcome=%s code=%s attempt=%d latency_ms=%.1f",
        *fields.values(),
        extra=fields,
    )


def attempt_bound(job: EmailJob, settings: Settings) -> float:
    """The longest an attempt may take: its lease is not renewed past this. An attempt
    may go through the account's fallbacks too (worker.routes), each with its own waits."""
    account = settings.accounts.get(job.account)
    names = [job.account, *(account.fallbacks if account is not None else ())]
    bound = 0.0
    for name in names:
        route = settings.accounts.get(name)
        bound += settings.smtp_timeout * 2 + 30 + settings.limiter.max_sleep
        bound += route.pool.acquire_timeout if route is not None else 0
    return bound


def claim_attempt(
    client: redis.Redis, job: EmailJob, owner: str, queue: str, settings: Settings
) -> tuple[Claim, set[str], tuple[float, str] | None]:
    """One round trip: the claim (lease, sent-ledger), the suppression list, the account's
    pause. Returns the claim, the suppressed recipients and the pause, if any."""
    take = partial(
        lifecycle.claim,
        job.id,
        owner,
        settings.recovery.lease,
        queue=queue,
        account=job.account,
        suppression_forms=[normalize_address(r) for r in job.recipients],
        client=client,
    )
    claim = take()
    if claim.verdict == "skip" and claim.state == "unknown":
        # No record: queued by mailworker 0.1, or kept past the record's life. Adopt it.
        claim = take(adopt=job.to_payload())
    flags = claim.suppressed
    blocked = {r for r, flag in zip(job.recipients, flags, strict=False) if flag}
    if job.ignore_suppression:
        blocked = set()  # the app asked for it: e.g. a password reset to a past bounce
    return claim, blocked, read_pause(claim.pause)


def settle_attempt(
    client: redis.Redis,
    settings: Settings,
    owner: str,
    job: EmailJob,
    outcome: Outcome,
    state: State,
    *,
    counts: dict[str, int],
    delay: float | None,
    held: bool,
    payload: EmailJob | None,
    dead_letter: dict[str, str] | None,
    fields: dict[str, str],
) -> float | None:
    """The attempt's last word, one atomic step (store.lifecycle): the state, the
    recipients, the counters and any dead letter, counted and told (events) as ``job``'s
    account, the one the attempt went through; the due time of a wait."""
    record = {
        "attempt": str(payload.attempt if payload else job.attempt),
        "recipients": json.dumps(outcome.recipients(job.recipients)),
        "via": job.account,
        **fields,
    }
    if payload is not None:
        record["payload"] = json.dumps(payload.to_payload())
    events = encode(outcome.events(job, state)) if settings.events.task else ""
    done, due = lifecycle.settle(
        job.id,
        owner,
        Settlement(
            state,
            job.account,
            record,
            counts,
            delay=delay,
            held_in=keys.held(job.account) if held else None,
            dead_letter=dead_letter,
            events=events,
        ),  # fmt: skip
        dead_retention=settings.retention.dead_letters,
        client=client,
    )
    if done:
        crash_point("settled")
        count_outcomes(job.account, counts)
    else:  # stalled past its lease: the reaper gave the job to another worker
        log.warning("job %s: lease lost before settling; the job's new holder decides", job.id)
    return due
