"""An app's own Celery, as a user would have it: a plain Celery app on the same Redis, with
the task named in EVENTS_TASK. It is deliberately slow and keeps what it received."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

RECEIVED = "eventapp:received"

app = Celery("eventapp", broker=os.environ["REDIS_URL"])
app.conf.update(task_serializer="json", accept_content=["json"],
                broker_connection_retry_on_startup=True)  # fmt: skip


@app.task(name="eventapp.on_mail_event")
def on_mail_event(event: dict[str, Any]) -> None:
    time.sleep(float(os.environ.get("EVENT_TASK_SECONDS", "0.2")))  # a slow app
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.rpush(RECEIVED, json.dumps(event))
    client.close()
