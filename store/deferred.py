"""The deferred set: jobs waiting in Redis for a later time, never in a worker's memory.

A Celery ETA/countdown would sit in a worker's memory, and the Redis transport redelivers
it after its visibility timeout: it would run twice, and a restart would hold it hostage.
So every delay (a retry, a paused account, ``send_at``) goes here instead:

    mailworker:{deferred}:due     ZSET  job id → due time
    mailworker:{deferred}:jobs    HASH  job id → {"queue": ..., "job": payload}
    mailworker:{deferred}:claims  ZSET  job id → lease expiry, while a mover publishes it

A mover (:mod:`worker.mover`, in every worker) claims due jobs atomically, publishes them,
then releases the claim. A mover that dies mid-way leaves a claim whose lease expires and
the job becomes due again: it may be published twice, never lost; the sent-ledger makes the
second run send nothing. The ``{deferred}`` hash tag keeps the keys in one Redis Cluster slot.
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

import redis

from mailworker.store import keys
from mailworker.store.client import get_redis

DUE, JOBS, CLAIMS = keys.DEFERRED_DUE, keys.DEFERRED_JOBS, keys.DEFERRED_CLAIMS

_CLAIM = """
local now, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[1], now, id)
end
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[3], now + lease, id)
  table.insert(out, id)
  table.insert(out, redis.call('HGET', KEYS[2], id) or '')
end
return out
"""
# Drop the claim; drop the payload too unless the job was deferred again meanwhile.
_RELEASE = """
for _, id in ipairs(ARGV) do
  redis.call('ZREM', KEYS[3], id)
  if not redis.call('ZSCORE', KEYS[1], id) then redis.call('HDEL', KEYS[2], id) end
end
return 0
"""


class Claimed(NamedTuple):
    job_id: str
    queue: str
    payload: dict[str, Any]
    task: str | None  # None: the send_email task


def defer(
    job_id: str,
    payload: dict[str, Any],
    due_at: float,
    queue: str,
    *,
    task: str | None = None,
    client: redis.Redis | None = None,
) -> None:
    """Keep ``payload`` in Redis until ``due_at``, then publish it to ``queue``."""
    pipe = (client or get_redis()).pipeline(transaction=True)
    stage_defer(pipe, job_id, payload, due_at, queue, task=task)
    pipe.execute()


def stage_defer(
    pipe: redis.client.Pipeline,
    job_id: str,
    payload: dict[str, Any],
    due_at: float,
    queue: str,
    *,
    task: str | None = None,
) -> None:
    """Add :func:`defer`'s writes to a pipeline the caller executes."""
    entry = {"queue": queue, "job": payload, **({"task": task} if task else {})}
    pipe.hset(JOBS, job_id, json.dumps(entry))
    pipe.zadd(DUE, {job_id: due_at})


def stage_discard(pipe: redis.client.Pipeline, job_id: str) -> None:
    """Forget a finished job's deferred copy (its watchdog, see :func:`tasks.send.enqueue`)."""
    pipe.zrem(DUE, job_id)
    pipe.hdel(JOBS, job_id)


def discard(job_id: str, *, client: redis.Redis | None = None) -> None:
    pipe = (client or get_redis()).pipeline(transaction=True)
    stage_discard(pipe, job_id)
    pipe.execute()


def claim_due(
    *,
    lease: float = 30.0,
    limit: int = 200,
    now: float | None = None,
    client: redis.Redis | None = None,
) -> list[Claimed]:
    """Claim up to ``limit`` due jobs; :func:`release` them once published."""
    client = client or get_redis()
    raw = client.eval(_CLAIM, 3, DUE, JOBS, CLAIMS, now or time.time(), lease, limit)
    claimed, orphans = [], []
    for job_id, blob in zip(raw[::2], raw[1::2], strict=True):
        if blob:
            entry = json.loads(blob)
            claimed.append(Claimed(job_id, entry["queue"], entry["job"], entry.get("task")))
        else:
            orphans.append(job_id)  # its payload is gone (discarded): nothing to publish
    release(orphans, client=client)  # or it would cycle between due and claims for ever
    return claimed


def release(job_ids: list[str], *, client: redis.Redis | None = None) -> None:
    if job_ids:
        (client or get_redis()).eval(_RELEASE, 3, DUE, JOBS, CLAIMS, *job_ids)


def due_at(job_id: str, *, client: redis.Redis | None = None) -> float | None:
    score = (client or get_redis()).zscore(DUE, job_id)
    return float(score) if score is not None else None
