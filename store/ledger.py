"""What must never happen twice: the sent-ledger and idempotency keys.

mailworker:sent:<job id>        SET   recipients that got 250 to DATA for this job
mailworker:idem:<key>           STR   the job id that claimed an idempotency key

The claim step (store.lifecycle) reads the sent-ledger with the job's record.
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
