"""Paused accounts: an account whose credentials or quota failed stops sending, cluster-wide.

    mailworker:paused:<account>            HASH {until, reason}, expiring at ``until``
    mailworker:jobs:held:<account>         ZSET job id -> pause end, expiring an hour after it

While paused, its jobs wait in Redis (state ``paused``, store.lifecycle; their retry
budget untouched, RETRY_MAX_AGE still counting) instead of burning through the queue with
the same 535, and each is noted in the account's held set. ``mailworker resume ACCOUNT``
(or :func:`resume_account`) lifts a pause early, e.g. right after the password was fixed,
and makes every held job due at once.
"""

from __future__ import annotations

import math
import time

import redis

from mailworker.store import keys
from mailworker.store.client import get_redis, lua, text_map

_HELD_GRACE = 3600  # the held set outlives the pause by this much, then expires

# Every held job still waiting in the deferred set becomes due now; the held set goes.
_RELEASE_HELD = """
local released = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  released = released + redis.call('ZADD', KEYS[2], 'XX', 'CH', ARGV[1], id)
end
redis.call('DEL', KEYS[1])
return released
"""


def stage_read_pause(pipe: redis.client.Pipeline, account: str) -> None:
    """Read ``account``'s pause in the caller's pipeline (:func:`read_pause` decodes it)."""
    pipe.hgetall(keys.paused(account))


def stage_held(pipe: redis.client.Pipeline, account: str, job_id: str, until: float) -> None:
    """Note, in the caller's transaction, that ``job_id`` waits for ``account``'s pause."""
    pipe.zadd(keys.held(account), {job_id: until})
    pipe.expire(keys.held(account), max(1, math.ceil(until - time.time())) + _HELD_GRACE)


def pause_account(
    account: str, seconds: float, reason: str, *, client: redis.Redis | None = None
) -> tuple[float, bool]:
    """Pause ``account`` for ``seconds``: ``(when the pause ends, whether it is new)``.

    Many workers hit the same refusal at once; only the one that started the pause is told
    it is new (and reports it).
    """
    until = time.time() + seconds
    pipe = (client or get_redis()).pipeline(transaction=True)
    pipe.exists(keys.paused(account))
    pipe.hset(keys.paused(account), mapping={"until": until, "reason": reason})
    pipe.expire(keys.paused(account), max(1, math.ceil(seconds)))
    existed, *_ = pipe.execute()
    return until, not existed


def paused_until(account: str, *, client: redis.Redis | None = None) -> tuple[float, str] | None:
    return read_pause(text_map((client or get_redis()).hgetall(keys.paused(account))))


def read_pause(record: dict[str, str]) -> tuple[float, str] | None:
    """``(until, reason)`` from a pause record, or ``None`` if there is none in force."""
    if not record or float(record["until"]) <= time.time():
        return None
    return float(record["until"]), record.get("reason", "")


def resume_account(account: str, *, client: redis.Redis | None = None) -> tuple[bool, int]:
    """Lift ``account``'s pause and make its held jobs due now: ``(was paused, jobs released)``."""
    client = client or get_redis()
    lifted = bool(client.delete(keys.paused(account)))
    released = lua(client, _RELEASE_HELD)(
        keys=[keys.held(account), keys.JOBS_DUE], args=[time.time()]
    )
    return lifted, int(released)
