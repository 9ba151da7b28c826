"""Paused accounts: an account whose credentials or quota failed stops sending, cluster-wide.

    mailworker:paused:<account>   HASH {until, reason}, expiring at ``until``

While paused, its jobs wait in the deferred set (their retry budget untouched) instead of
burning through the queue with the same 535. ``mailworker resume ACCOUNT`` lifts a pause
early, e.g. right after the password was fixed.
"""

from __future__ import annotations

import math
import time

import redis

from tasks.redis_client import KEY_PREFIX, get_redis


def pause_key(account: str) -> str:
    return f"{KEY_PREFIX}paused:{account}"


def pause_account(
    account: str, seconds: float, reason: str, *, client: redis.Redis | None = None
) -> tuple[float, bool]:
    """Pause ``account`` for ``seconds``: ``(when the pause ends, whether it is new)``.

    Many workers hit the same refusal at once; only the one that started the pause is told
    it is new (and reports it).
    """
    until = time.time() + seconds
    pipe = (client or get_redis()).pipeline(transaction=True)
    pipe.exists(pause_key(account))
    pipe.hset(pause_key(account), mapping={"until": until, "reason": reason})
    pipe.expire(pause_key(account), max(1, math.ceil(seconds)))
    existed, *_ = pipe.execute()
    return until, not existed


def paused_until(account: str, *, client: redis.Redis | None = None) -> tuple[float, str] | None:
    return read_pause((client or get_redis()).hgetall(pause_key(account)))


def read_pause(record: dict[str, str]) -> tuple[float, str] | None:
    """``(until, reason)`` from a pause record, or ``None`` if there is none in force."""
    if not record or float(record["until"]) <= time.time():
        return None
    return float(record["until"]), record.get("reason", "")


def resume_account(account: str, *, client: redis.Redis | None = None) -> bool:
    return bool((client or get_redis()).delete(pause_key(account)))
