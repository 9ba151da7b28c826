"""The floor of any one-task-per-message design: a Celery task that sends nothing.

Same broker, serializer, acks and prefetch settings as mailworker; the task only records
that it ran. No email worker built on Celery tasks can drain faster than this.

Run as ``celery -A bench.floor worker -Q bench-floor``.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from bench.sink import FLOOR_DONE, FLOOR_LAST
from mailworker.settings import load_settings
from mailworker.tasks.app import celery_config

app = Celery("bench-floor")
app.conf.update(
    celery_config(load_settings()),
    task_default_queue="bench-floor",
    task_queues=None,
    task_routes=None,
)
_redis = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task(name="bench.noop")
def noop(to: str) -> None:
    pipe = _redis.pipeline(transaction=False)
    pipe.incr(FLOOR_DONE)
    pipe.set(FLOOR_LAST, repr(time.time()))
    pipe.execute()
