"""Per-job status records in Redis: what happened to a job, readable by anyone.

A record is a hash ``mailworker:job:<id>`` with a TTL. States: ``queued`` → ``sending`` →
``sent`` | ``retrying`` | ``failed``; ``recipients`` maps each address to ``sent`` or
``refused``. Records hold no message content and no credentials.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Literal, cast

import redis

from mailworker.store import keys
from mailworker.store.client import Fields, get_redis, text_map

State = Literal["queued", "sending", "sent", "deferred", "failed"]
STATUS_TTL = 7 * 24 * 3600


def forget(job_id: str, *, client: redis.Redis | None = None) -> None:
    """Drop the record of a job that was never queued (its enqueue failed)."""
    (client or get_redis()).delete(keys.job_status(job_id))


def record_status(
    job_id: str,
    state: State,
    *,
    client: redis.Redis | None = None,
    recipients: Mapping[str, str] | None = None,
    **fields: str | int | float,
) -> None:
    """Write ``state`` (and any extra fields) to the job's record and renew its TTL."""
    pipe = (client or get_redis()).pipeline(transaction=False)
    stage_status(pipe, job_id, state, recipients=recipients, **fields)
    pipe.execute()


def stage_status(
    pipe: redis.client.Pipeline,
    job_id: str,
    state: State,
    *,
    recipients: Mapping[str, str] | None = None,
    **fields: str | int | float,
) -> None:
    """Add :func:`record_status`'s writes to a pipeline the caller executes."""
    mapping: dict[str, str | int | float] = {"state": state, "updated_at": time.time(), **fields}
    if recipients is not None:
        mapping["recipients"] = json.dumps(dict(recipients))
    pipe.hset(keys.job_status(job_id), mapping=cast(Fields, mapping))
    pipe.expire(keys.job_status(job_id), STATUS_TTL)


def stage_previous_state(pipe: redis.client.Pipeline, job_id: str) -> None:
    """Read the job's state in the caller's pipeline, before it is overwritten."""
    pipe.hget(keys.job_status(job_id), "state")


def status(job_id: str, *, client: redis.Redis | None = None) -> dict[str, Any] | None:
    """The job's record as a dict, or ``None`` if unknown or expired."""
    raw = (client or get_redis()).hgetall(keys.job_status(job_id))
    if not raw:
        return None
    record: dict[str, Any] = dict(text_map(raw))
    if "recipients" in record:
        record["recipients"] = json.loads(record["recipients"])
    if "attempt" in record:
        record["attempt"] = int(record["attempt"])
    return record
