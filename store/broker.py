"""What the broker holds, read from kombu's own keys (kombu owns them; we only read).

kombu's Redis transport keeps each queue as a list (``mailworker:celery:<queue>``) that
producers LPUSH and workers BRPOP, and every message a worker has taken but not yet
acknowledged in the ``unacked`` hash (delivery tag -> ``[message, exchange, routing key]``).
Together they say whether a job's message still exists somewhere (store.lost).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from mailworker.store import keys

UNACKED = f"{keys.CELERY_PREFIX}unacked"


def task_ids_in_hand(client: redis.Redis) -> set[str]:
    """Task ids of every message a worker holds (prefetched, running or awaiting restore)."""
    ids = set()
    for raw in client.hvals(UNACKED):
        task_id = _task_id(raw)
        if task_id:
            ids.add(task_id)
    return ids


def _task_id(raw: Any) -> str | None:
    try:
        message = json.loads(raw)[0]
        return str(message["headers"]["id"])
    except (ValueError, TypeError, KeyError, IndexError):
        return None  # not a Celery task message: not one of our jobs either
