"""What must never happen twice: the sent-ledger, idempotency keys and the run lock.

mailworker:sent:<job id>        SET   recipients that got 250 to DATA for this job
mailworker:idem:<key>           STR   the job id that claimed an idempotency key
mailworker:running:<job id>     STR   held while one copy of the job is being sent
"""

from __future__ import annotations

import redis
import redis.asyncio

from mailworker.store import keys
from mailworker.store.client import get_redis

LEDGER_TTL = 30 * 24 * 3600
IDEMPOTENCY_TTL = 7 * 24 * 3600


async def mark_sent_async(
    client: redis.asyncio.Redis, job_id: str, recipients: tuple[str, ...]
) -> None:
    """Record recipients that got 250; called on the worker's event loop right after it."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.sadd(keys.sent(job_id), *recipients)
        pipe.expire(keys.sent(job_id), LEDGER_TTL)
        await pipe.execute()


def stage_sent_lookup(pipe: redis.client.Pipeline, job_id: str) -> None:
    """Read, in the caller's pipeline, who already got a 250 for this job."""
    pipe.smembers(keys.sent(job_id))


def stage_hold(pipe: redis.client.Pipeline, job_id: str, seconds: float) -> None:
    """Try to take the job's run lock in ``pipe``; its result is ``False`` while another copy
    of the job is being sent (a watchdog copy, or a redelivery racing the original)."""
    pipe.set(keys.run_lock(job_id), "1", nx=True, ex=max(1, int(seconds)))


def lock_remaining(job_id: str, *, client: redis.Redis | None = None) -> int:
    """Seconds until another copy's run lock expires (a killed worker's lock included)."""
    return max(0, int((client or get_redis()).ttl(keys.run_lock(job_id))))


def stage_let_go(pipe: redis.client.Pipeline, job_id: str) -> None:
    pipe.delete(keys.run_lock(job_id))


def claim_idempotency_key(key: str, job_id: str, *, client: redis.Redis | None = None) -> str:
    """Return the job id owning ``key``: ``job_id`` if it was free, else the first one's."""
    client = client or get_redis()
    if client.set(keys.idempotency(key), job_id, nx=True, ex=IDEMPOTENCY_TTL):
        return job_id
    return str(client.get(keys.idempotency(key)) or job_id)


def release_idempotency_key(key: str, job_id: str, *, client: redis.Redis | None = None) -> None:
    """Free ``key`` if ``job_id`` still owns it (the job was dead-lettered: a new try may go)."""
    client = client or get_redis()
    if client.get(keys.idempotency(key)) == job_id:
        client.delete(keys.idempotency(key))
