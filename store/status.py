"""What happened to a job, readable by anyone: a view of its record (store.lifecycle).

``state`` is one of the lifecycle's states (queued, scheduled, sending, deferred, paused,
sent, failed, cancelled, expired); ``recipients`` maps each address to ``sent``,
``pending``, ``bounced ...`` or ``failed ...``. The view shows no message content, no
payload and no lease owner.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from mailworker.store import keys
from mailworker.store.client import get_redis, text_map

_PRIVATE = ("payload", "owner")  # the message itself, and which process holds the lease


def status(job_id: str, *, client: redis.Redis | None = None) -> dict[str, Any] | None:
    """The job's record as a dict, or ``None`` if unknown or expired."""
    raw = text_map((client or get_redis()).hgetall(keys.job_status(job_id)))
    if not raw:
        return None
    record: dict[str, Any] = {
        k: v for k, v in raw.items() if k not in _PRIVATE and not k.startswith("sent:")
    }
    if "recipients" in record:
        record["recipients"] = json.loads(record["recipients"])
    for number in ("attempt", "rescues"):
        if number in record:
            record[number] = int(record[number])
    return record
