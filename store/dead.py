"""Dead letters: jobs that will not be delivered, kept with their reason for an operator.

mailworker:dead           ZSET  job id → time it died
mailworker:dead:<job id>  HASH  reason, code, reply, attempts, account, queue, timestamps,
                                and the job payload (never credentials)
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, cast

import redis

from mailworker.settings import get_settings
from mailworker.store import keys
from mailworker.store.client import Fields, get_redis, text_map, texts


def letter(
    job_id: str,
    payload: dict[str, Any] | None,
    *,
    reason: str,
    queue: str,
    code: int | None = None,
    reply: str = "",
) -> dict[str, str]:
    """A dead letter's fields (the lifecycle's settle step writes them with the state)."""
    payload = payload or {}
    return {
        "job_id": job_id,
        "reason": reason,
        "code": "" if code is None else str(code),
        "reply": reply,
        "attempts": str(payload.get("attempt", 0)),
        "account": str(payload.get("account", "")),
        "queue": queue,
        "created_at": str(payload.get("created_at", "")),
        "payload": json.dumps(payload),
    }


def bury(
    job_id: str,
    payload: dict[str, Any] | None,
    *,
    reason: str,
    queue: str,
    code: int | None = None,
    reply: str = "",
    client: redis.Redis | None = None,
) -> None:
    """Keep a job that has no record (an undecodable item) for DEAD_LETTER_RETENTION."""
    retention = get_settings().retention.dead_letters
    now = time.time()
    record = {
        **letter(job_id, payload, reason=reason, queue=queue, code=code, reply=reply),
        "dead_at": str(now),
    }
    pipe = (client or get_redis()).pipeline(transaction=True)
    pipe.hset(keys.dead_letter(job_id), mapping=cast(Fields, record))
    pipe.expire(keys.dead_letter(job_id), max(1, math.ceil(retention)))
    pipe.zadd(keys.DEAD, {job_id: now})
    pipe.zremrangebyscore(keys.DEAD, "-inf", now - retention)  # their records have expired
    pipe.execute()


def show(job_id: str, *, client: redis.Redis | None = None) -> dict[str, Any] | None:
    record: dict[str, Any] = dict(
        text_map((client or get_redis()).hgetall(keys.dead_letter(job_id)))
    )
    if not record:
        return None
    record["payload"] = json.loads(record["payload"])
    return record


def list_dead(limit: int = 100, *, client: redis.Redis | None = None) -> list[dict[str, Any]]:
    client = client or get_redis()
    ids = texts(client.zrevrange(keys.DEAD, 0, limit - 1))
    records = [show(job_id, client=client) for job_id in ids if job_id is not None]
    return [r for r in records if r is not None]


def count(*, client: redis.Redis | None = None) -> int:
    return int((client or get_redis()).zcard(keys.DEAD))


def remove(job_id: str, *, client: redis.Redis | None = None) -> None:
    pipe = (client or get_redis()).pipeline(transaction=True)
    pipe.delete(keys.dead_letter(job_id))
    pipe.zrem(keys.DEAD, job_id)
    pipe.execute()


def all_ids(*, client: redis.Redis | None = None) -> list[str]:
    return [job_id for job_id in texts((client or get_redis()).zrange(keys.DEAD, 0, -1)) if job_id]


def purge(*, older_than: float | None = None, client: redis.Redis | None = None) -> int:
    """Delete every dead letter, or those dead for more than ``older_than`` seconds."""
    client = client or get_redis()
    newest = "+inf" if older_than is None else time.time() - older_than
    ids = [i for i in texts(client.zrangebyscore(keys.DEAD, "-inf", newest)) if i is not None]
    for job_id in ids:
        remove(job_id, client=client)
    return len(ids)
