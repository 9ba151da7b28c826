"""What a report does: suppress, count, and tell the app (one recipient at a time).

    hard bounce   the address is suppressed for all mail (type, source, DSN status)
    soft bounce   counted; SOFT_BOUNCE_LIMIT within SOFT_BOUNCE_WINDOW suppress it from
                  campaigns for SOFT_BOUNCE_SUPPRESSION (transactional mail still goes)
    complaint     suppressed from every campaign at once, and unsubscribed from the
                  campaign's list; receipts and password resets still go
    delayed       nothing (the server is still trying)

In every case the recipient's status becomes ``bounced`` / ``complained`` and one event is
written. Only a report about a message we sent, naming one of its recipients, does
anything: a bounce for mail we never sent (backscatter) or a forged one suppresses nobody.
Every step is idempotent, and the suppression is written before the status: a reader killed
half-way and run again finishes the job and repeats nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import redis

from mailworker.feedback.alerts import check_rates
from mailworker.feedback.reports import RecipientReport, Report
from mailworker.settings import Settings, get_settings
from mailworker.store import feedback as store
from mailworker.store import suppression
from mailworker.store.client import get_redis
from mailworker.store.events import Event

log = logging.getLogger("mailworker.feedback")

Effect = Literal["new", "repeat", "unmatched", "ignored"]


@dataclass(frozen=True)
class Applied:
    """What one recipient's part of a report did."""

    address: str
    effect: Effect
    outcome: str = ""  # bounced | complained
    job_id: str = ""


def apply_report(
    report: Report,
    source: str,
    *,
    settings: Settings | None = None,
    client: redis.Redis | None = None,
) -> list[Applied]:
    """Apply every recipient of ``report`` (``source``: dsn, arf, ses, ...)."""
    settings, client = settings or get_settings(), client or get_redis()
    job_id = report.job_id
    done = []
    for recipient in report.recipients:
        if recipient.severity == "delayed":
            done.append(Applied(recipient.address, "ignored"))
            continue
        target = store.locate(job_id, recipient.address, client=client) if job_id else None
        if target is None:
            done.append(Applied(recipient.address, "unmatched", job_id=job_id or ""))
            continue
        done.append(_apply_one(target, recipient, source, settings, client))
    return done


def _apply_one(
    target: store.Target,
    recipient: RecipientReport,
    source: str,
    settings: Settings,
    client: redis.Redis,
) -> Applied:
    policy, complaint = settings.feedback, recipient.severity == "complaint"
    outcome: store.Outcome = "complained" if complaint else "bounced"
    event = Event(
        outcome,
        target.job_id,
        target.address,
        target.account,
        target.campaign,
        code=recipient.status,
        detail=recipient.feedback_type if complaint else recipient.severity,
        tags=target.tags,
    )
    events = [event] if settings.events.task else []
    reason = (recipient.diagnostic or recipient.feedback_type or "")[:300]
    if recipient.severity == "hard":
        suppression.suppress(target.address, reason, kind="hard-bounce", source=source,
                             status=recipient.status, client=client)  # fmt: skip
    elif recipient.severity == "soft":
        count = store.count_soft_bounce(target.address, event.id,
                                        policy.soft_bounce_window, client=client)  # fmt: skip
        if count >= policy.soft_bounce_limit:
            suppression.suppress(
                target.address, f"{count} soft bounces, the last: {reason}",
                kind="soft-bounce", source=source, status=recipient.status, scope="bulk",
                expires_at=time.time() + policy.soft_bounce_suppression, client=client,
            )  # fmt: skip
    else:
        suppression.suppress(target.address, reason or "complaint", kind="complaint",
                             source=source, scope="bulk", client=client)  # fmt: skip
        if target.list_id:
            suppression.suppress(target.address, f"complaint (campaign {target.campaign})",
                                 kind="unsubscribe", source=source,
                                 scope=f"list:{target.list_id}", client=client)  # fmt: skip
            if events:
                events.append(_unsubscribed(event))
    detail = " ".join(p for p in (recipient.status, recipient.severity if not complaint else
                                  recipient.feedback_type) if p)  # fmt: skip
    effect = store.record(target, outcome, detail, events, hard=recipient.severity == "hard",
                          retention=settings.retention.campaigns, client=client)  # fmt: skip
    if effect == "stranger":  # the record ended between locate and record
        return Applied(target.address, "unmatched", outcome, target.job_id)
    if effect == "new" and recipient.severity in ("hard", "complaint"):
        check_rates(target.account, settings, client)
    log.info("%s: %s %s (%s, %s)", target.job_id, outcome, recipient.status or "", source,
             effect)  # fmt: skip
    return Applied(target.address, effect, outcome, target.job_id)


def _unsubscribed(complained: Event) -> Event:
    return Event("unsubscribed", complained.job_id, complained.recipient, complained.account,
                 complained.campaign, detail="complaint", tags=complained.tags,
                 at=complained.at)  # fmt: skip
