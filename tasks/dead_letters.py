"""Send a dead letter again: the producer's side of the dead-letter queue.

The records themselves live in :mod:`mailworker.store.dead`; sending one again is a new
enqueue, which only the producer does.
"""

from __future__ import annotations

import time
from dataclasses import replace

import redis

from mailworker.store.dead import remove, show
from mailworker.store.job import EmailJob
from mailworker.tasks.send import enqueue


def resurrect(job_id: str, *, client: redis.Redis | None = None) -> bool:
    """Queue a dead job again with a fresh retry budget; ``False`` if there is no such job.

    Recipients already in its sent-ledger still get nothing: the worker checks it first.
    """
    record = show(job_id, client=client)
    if record is None:
        return False
    job = EmailJob.from_payload(record["payload"])
    revived = replace(job, attempt=1, created_at=time.time())
    enqueue(revived, queue=record["queue"], revive=True)
    remove(job_id, client=client)
    return True
