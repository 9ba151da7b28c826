"""From a decision to what happens: one table for the transactional and the campaign path.

    decision             recipient fate   suppress  pause account  slow down  failing account
    delivered            sent
    unknown_recipient    bounced          yes
    mailbox_full         retry
    refused              failed
    account              wait                       yes
    throttle             retry                                     yes        noted
    too_many_recipients  retry
    transient            retry                                                noted

``retry`` spends an attempt and backs off (RETRY_BASE_DELAY...), ``wait`` does not (the
account's pause decides when); both end by RETRY_MAX_AGE at the latest. Only
``unknown_recipient`` suppresses, and only :mod:`worker.classify` can produce it, from a RCPT
reply; a pause comes only from ``account``, which no recipient-level code produces.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mailworker.delivery.classify import Decision, Verdict


class Fate(Enum):
    SENT = "sent"
    BOUNCED = "bounced"  # failed for good, address suppressed
    FAILED = "failed"  # this message failed for good; nobody suppressed
    RETRY = "retry"  # again after a backoff; spends an attempt
    WAIT = "wait"  # again when the account's pause ends; spends no attempt


@dataclass(frozen=True)
class Plan:
    fate: Fate
    suppress: bool = False
    pause_account: bool = False
    slow_down: bool = False
    note_failing: bool = False


_PLANS = {
    Decision.DELIVERED: Plan(Fate.SENT),
    Decision.UNKNOWN_RECIPIENT: Plan(Fate.BOUNCED, suppress=True),
    Decision.MAILBOX_FULL: Plan(Fate.RETRY),
    Decision.REFUSED: Plan(Fate.FAILED),
    Decision.ACCOUNT: Plan(Fate.WAIT, pause_account=True),
    Decision.THROTTLE: Plan(Fate.RETRY, slow_down=True, note_failing=True),
    Decision.TOO_MANY_RECIPIENTS: Plan(Fate.RETRY),
    Decision.TRANSIENT: Plan(Fate.RETRY, note_failing=True),
}


def plan(verdict: Verdict, *, whole_message: bool = False) -> Plan:
    """What ``verdict`` does; ``whole_message`` when no single recipient was judged."""
    chosen = _PLANS[verdict.decision]
    if whole_message and chosen.suppress:
        return Plan(Fate.FAILED)  # a refusal of the whole message names no one to suppress
    return chosen
