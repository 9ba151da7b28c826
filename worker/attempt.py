"""One attempt of a transactional job: its claim, who got what, and its line in the log."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial

import redis

from mailworker.delivery.classify import Verdict
from mailworker.settings import Settings
from mailworker.store import lifecycle
from mailworker.store.addresses import normalize_address
from mailworker.store.events import Event, EventType
from mailworker.store.job import EmailJob
from mailworker.store.lifecycle import Claim
from mailworker.store.pauses import read_pause
from mailworker.worker.metrics import SEND_SECONDS

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
    """The longest an attempt may take: its lease is not renewed past this."""
    account = settings.accounts.get(job.account)
    bound = settings.smtp_timeout * 2 + 30 + settings.limiter.max_sleep
    return bound + (account.pool.acquire_timeout if account is not None else 0)


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
