"""What must never happen twice: the sent-ledger, idempotency keys and the suppression list.

    mailworker:sent:<job id>        SET   recipients that got 250 to DATA for this job
    mailworker:idem:<key>           STR   the job id that claimed an idempotency key
    mailworker:suppressed           HASH  address → why it gets no more mail
"""

from __future__ import annotations

import redis

from tasks.redis_client import KEY_PREFIX, get_redis

LEDGER_TTL = 30 * 24 * 3600
IDEMPOTENCY_TTL = 7 * 24 * 3600
SUPPRESSED = f"{KEY_PREFIX}suppressed"


def _sent_key(job_id: str) -> str:
    return f"{KEY_PREFIX}sent:{job_id}"


def _idem_key(key: str) -> str:
    return f"{KEY_PREFIX}idem:{key}"


def already_sent(job_id: str, *, client: redis.Redis | None = None) -> set[str]:
    return set((client or get_redis()).smembers(_sent_key(job_id)))


def mark_sent(job_id: str, recipients: tuple[str, ...] | list[str], *,
              client: redis.Redis | None = None) -> None:
    if not recipients:
        return
    pipe = (client or get_redis()).pipeline(transaction=False)
    pipe.sadd(_sent_key(job_id), *recipients)
    pipe.expire(_sent_key(job_id), LEDGER_TTL)
    pipe.execute()


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
    (client or get_redis()).hset(SUPPRESSED, address.lower(), reason)


def suppressed(addresses: tuple[str, ...], *, client: redis.Redis | None = None) -> set[str]:
    """The subset of ``addresses`` on the suppression list."""
    if not addresses:
        return set()
    reasons = (client or get_redis()).hmget(SUPPRESSED, [a.lower() for a in addresses])
    return {a for a, why in zip(addresses, reasons, strict=True) if why is not None}
