"""One attempt of a transactional job: who got what, and the line it leaves in the log."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from mailworker.delivery.classify import Verdict
from mailworker.store.job import EmailJob
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
