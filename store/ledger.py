"""What must never happen twice: the sent-ledger, idempotency keys and the suppression list.

mailworker:sent:<job id>        SET   recipients that got 250 to DATA for this job
mailworker:idem:<key>           STR   the job id that claimed an idempotency key
mailworker:running:<job id>     STR   held while one copy of the job is being sent
mailworker:suppressed           HASH  address → why it gets no more mail; the address in
                                      one form (tasks.addresses.normalize_address)
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
import redis.asyncio

from mailworker.store.addresses import normalize_address
from mailworker.store.client import KEY_PREFIX, get_redis

LEDGER_TTL = 30 * 24 * 3600
IDEMPOTENCY_TTL = 7 * 24 * 3600
SUPPRESSED = f"{KEY_PREFIX}suppressed"


def sent_key(job_id: str) -> str:
    return f"{KEY_PREFIX}sent:{job_id}"


def _run_key(job_id: str) -> str:
    return f"{KEY_PREFIX}running:{job_id}"


def _idem_key(key: str) -> str:
    return f"{KEY_PREFIX}idem:{key}"


async def mark_sent_async(
    client: redis.asyncio.Redis, job_id: str, recipients: tuple[str, ...]
) -> None:
    """Record recipients that got 250; called on the worker's event loop right after it."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.sadd(sent_key(job_id), *recipients)
        pipe.expire(sent_key(job_id), LEDGER_TTL)
        await pipe.execute()


def stage_hold(pipe: redis.client.Pipeline, job_id: str, seconds: float) -> None:
    """Try to take the job's run lock in ``pipe``; its result is ``False`` while another copy
    of the job is being sent (a watchdog copy, or a redelivery racing the original)."""
    pipe.set(_run_key(job_id), "1", nx=True, ex=max(1, int(seconds)))


def lock_remaining(job_id: str, *, client: redis.Redis | None = None) -> int:
    """Seconds until another copy's run lock expires (a killed worker's lock included)."""
    return max(0, int((client or get_redis()).ttl(_run_key(job_id))))


def stage_let_go(pipe: redis.client.Pipeline, job_id: str) -> None:
    pipe.delete(_run_key(job_id))


def claim_idempotency_key(key: str, job_id: str, *, client: redis.Redis | None = None) -> str:
    """Return the job id owning ``key``: ``job_id`` if it was free, else the first one's."""
    client = client or get_redis()
    if client.set(_idem_key(key), job_id, nx=True, ex=IDEMPOTENCY_TTL):
        return job_id
    return str(client.get(_idem_key(key)) or job_id)


def release_idempotency_key(key: str, job_id: str, *, client: redis.Redis | None = None) -> None:
    """Free ``key`` if ``job_id`` still owns it (the job was dead-lettered: a new try may go)."""
    client = client or get_redis()
    if client.get(_idem_key(key)) == job_id:
        client.delete(_idem_key(key))


def suppress(address: str, reason: str, *, client: redis.Redis | None = None) -> None:
    (client or get_redis()).hset(SUPPRESSED, normalize_address(address), reason)


def suppressed(addresses: tuple[str, ...], *, client: redis.Redis | None = None) -> set[str]:
    """The subset of ``addresses`` on the suppression list."""
    if not addresses:
        return set()
    keys = [normalize_address(a) for a in addresses]
    reasons = (client or get_redis()).hmget(SUPPRESSED, keys)
    return {a for a, why in zip(addresses, reasons, strict=True) if why is not None}


def unsuppress(addresses: list[str], *, client: redis.Redis | None = None) -> int:
    """Take ``addresses`` off the suppression list; return how many were on it."""
    if not addresses:
        return 0
    keys = [normalize_address(a) for a in addresses]
    return int((client or get_redis()).hdel(SUPPRESSED, *keys))


def suppression_list(*, client: redis.Redis | None = None) -> Iterator[tuple[str, str]]:
    """Every suppressed address and why, streamed (HSCAN), for exports of any size."""
    yield from (client or get_redis()).hscan_iter(SUPPRESSED, count=1000)
