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
account's pause decides when); both end by RETRY_MAX_AGE at the latest.

An account with ``fallback=`` accounts hands a job to the next one at once (:func:`fails_over`)
when it cannot take the message at all: ``account`` (AUTH, TLS, sender refused), or
``transient`` with no reply or while the session opens (refused, timed out, 421 greeting).
A ``transient`` or ``throttle`` reply later in the dialogue fails over only once the
account has been failing for FAILOVER_AFTER_SECONDS. A refusal of the message or of a
recipient never does: the other account would only be refused (or bounce) again. Only
``unknown_recipient`` suppresses, and only :mod:`worker.classify` can produce it, from a RCPT
reply; a pause comes only from ``account``, which no recipient-level code produces.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mailworker.delivery.classify import Decision, Verdict
from mailworker.delivery.stage import Stage


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


# Stages at which the session is still being opened: a failure there says the account
# cannot take any message right now, not that this one is unwelcome.
_OPENING = frozenset({Stage.CONNECT, Stage.EHLO, Stage.STARTTLS, Stage.AUTH})


def fails_over(verdict: Verdict, stage: Stage, *, failing_for: float, after: float) -> bool:
    """Whether a whole-message failure at an account sends the job on to its next account;
    ``failing_for`` is how long the account has been failing transiently."""
    if verdict.decision is Decision.ACCOUNT:
        return True
    if verdict.decision in (Decision.TRANSIENT, Decision.THROTTLE):
        unreachable = verdict.code is None or stage in _OPENING
        return unreachable or failing_for >= after
    return False
