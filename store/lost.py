"""Finding queued jobs whose broker message is gone, without confusing them with a backlog.

A message can vanish between a worker's BRPOP and kombu recording it as unacked (a worker
killed in that instant), or a producer or mover can die between writing the job's record
and publishing it. Such a job stays ``queued`` with no message anywhere. A job merely
waiting in a long queue must not be published twice, so a ``queued`` job is judged lost
only when all of these hold:

* it was queued more than LOST_MESSAGE_AFTER_SECONDS ago (Redis's clock);
* its message is not in any worker's hands (kombu's unacked hash);
* its queue has moved past it: a job queued LOST_MESSAGE_AFTER_SECONDS after it has been
  claimed already (queues are first-in first-out), or the queue list is empty.

A wrong guess costs one extra message, which the claim step turns into a no-op; a missed
loss would cost a job, so the rule errs on the side of publishing.
"""

from __future__ import annotations

import redis

from mailworker.store import broker, keys
from mailworker.store.client import texts


def lost_jobs(lost_after: float, *, limit: int = 500, client: redis.Redis) -> list[tuple[str, str]]:
    """``(job id, queued_at)`` of queued jobs whose message is gone."""
    seconds, micros = client.time()
    now = seconds + micros / 1e6
    old = texts(client.zrangebyscore(keys.JOBS_QUEUED, "-inf", now - lost_after, 0, limit))
    candidates = [job_id for job_id in old if job_id]
    if not candidates:
        return []
    pipe = client.pipeline(transaction=False)
    for job_id in candidates:
        pipe.hmget(keys.job_status(job_id), "queue", "queued_at", "state")
    records = dict(zip(candidates, pipe.execute(), strict=True))
    gone = [job_id for job_id, (_, _, state) in records.items() if state is None]
    if gone:  # records that expired: nothing to recover
        client.zrem(keys.JOBS_QUEUED, *gone)
    queues = sorted({queue for queue, _, state in records.values() if queue and state == "queued"})
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.get(keys.claimed_mark(queue))
        pipe.llen(keys.queue_key(queue))
    replies = pipe.execute()
    marks = {q: float(replies[2 * i] or 0) for i, q in enumerate(queues)}
    empty = {q for i, q in enumerate(queues) if int(replies[2 * i + 1]) == 0}
    in_hand = broker.task_ids_in_hand(client)
    lost = []
    for job_id, (queue, queued_at, state) in records.items():
        if state != "queued" or not queue or not queued_at or job_id in in_hand:
            continue
        if queue in empty or float(queued_at) < marks[queue] - lost_after:
            lost.append((job_id, queued_at))
    return lost
