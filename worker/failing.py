"""An account that keeps failing transiently gets one Sentry event, not one per retry.

    mailworker:{account:<name>}:failing-since   first transient failure since the last send
    mailworker:{account:<name>}:failing-alerted  set for an hour (at least) after an event

Every successful send clears both (in the job's settle step, store.lifecycle).
"""

from __future__ import annotations

import logging
import time

import redis

from mailworker.delivery.classify import Verdict
from mailworker.delivery.ratelimit import slow_down
from mailworker.observe.sentry import report
from mailworker.settings import Settings
from mailworker.store import keys
from mailworker.store.client import get_redis

log = logging.getLogger("mailworker.delivery")

_DAY = 86400
_HOUR = 3600  # a reminder at most hourly while the account keeps failing


def failing_key(account: str) -> str:
    return keys.account(account, "failing-since")


def note_transient(
    account: str,
    threshold: float,
    reason: str,
    *,
    code: int | None = None,
    queue: str | None = None,
    client: redis.Redis | None = None,
) -> bool:
    """Record a transient failure; report once if the account has failed for ``threshold``."""
    client = client or get_redis()
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.set(failing_key(account), now, nx=True, ex=_DAY)
    pipe.get(failing_key(account))
    _, since = pipe.execute()
    failing_for = now - float(since or now)
    if failing_for < threshold:
        return False
    alerted = keys.account(account, "failing-alerted")
    if not client.set(alerted, now, nx=True, ex=max(_HOUR, int(threshold))):
        return False
    report(
        "failing",
        f"account {account!r} has failed every send for {failing_for:.0f} s: {reason}",
        account=account,
        smtp_code=code,
        queue=queue,
        level="warning",
    )
    return True


def slow_down_if_throttled(account: str, verdict: Verdict, settings: Settings) -> None:
    """A "slow down" reply (421 4.7.0, 4.7.28...) lowers the account's rate for a while."""
    if verdict.throttled:
        factor = slow_down(account, settings.limiter.throttle_cooldown)
        log.warning(
            "account %s throttled by the server (%s %s): sending at %.0f%% of its rate",
            account, verdict.code, verdict.enhanced or "", factor * 100,
        )  # fmt: skip
