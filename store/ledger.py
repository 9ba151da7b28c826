"""Idempotency keys: one job per key an app gives, for IDEMPOTENCY_TTL.

mailworker:idem:<key>           STR   the job id that claimed an idempotency key

(The sent-ledger, recipients that got a 250, lives in the job's record: store.lifecycle.)
"""

from __future__ import annotations

import redis
import redis.asyncio

from mailworker.store import keys
from mailworker.store.client import get_redis

IDEMPOTENCY_TTL = 7 * 24 * 3600


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
