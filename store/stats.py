"""Outcome counters per account, summed over every worker: what `mailworker stats` shows.

    mailworker:stats:<account>   HASH  outcome -> count, written by each job's settle step

``sent`` counts messages; ``bounced``, ``failed`` and ``suppressed`` count recipients;
``deferred`` counts attempts put off; ``dead`` counts dead-lettered jobs; ``expired`` and
``cancelled`` count jobs that ended so (``send_email(expires_in=...)``, an operator).
"""

from __future__ import annotations

from typing import Any

import redis

from mailworker.store import keys
from mailworker.store.client import get_redis

OUTCOMES = ("sent", "deferred", "bounced", "failed", "dead", "suppressed", "expired", "cancelled")


def account_counts(
    accounts: list[str], *, client: redis.Redis | None = None
) -> dict[str, dict[str, int]]:
    """Outcome counts per account (every worker, all time)."""
    pipe = (client or get_redis()).pipeline(transaction=False)
    for account in accounts:
        pipe.hgetall(keys.stats(account))
    return {
        account: {outcome: int(raw.get(outcome, 0)) for outcome in OUTCOMES}
        for account, raw in zip(accounts, pipe.execute(), strict=True)
    }


def overview(
    accounts: list[str], queues: list[str], *, client: redis.Redis | None = None
) -> dict[str, Any]:
    """Counts per account, jobs waiting per queue, deferred jobs and dead letters."""
    client = client or get_redis()
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(keys.queue_key(queue))
    pipe.zcard(keys.JOBS_DUE)
    pipe.zcard(keys.DEAD)
    *waiting, deferred, dead = pipe.execute()
    return {
        "accounts": account_counts(accounts, client=client),
        "queued": dict(zip(queues, map(int, waiting), strict=True)),
        "deferred": int(deferred),
        "dead": int(dead),
    }
