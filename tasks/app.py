"""The Celery application, configured for email from :mod:`settings` on first use.

Producers and workers share this app; it imports nothing SMTP-related, so a web process
that only calls ``send_email.delay()`` stays light.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from mailworker.settings import Settings, get_settings
from mailworker.settings.redis_url import sentinel_parts
from mailworker.store import keys

TRANSACTIONAL_QUEUE = "email"
# send_email(priority="high"): its own queue, which every worker of `email` also serves.
PRIORITY_QUEUE = "email.high"
BULK_QUEUE = "bulk"  # campaigns: their own queue and Procfile process type
SEND_EMAIL_TASK = "mailworker.send_email"
SEND_BATCH_TASK = "mailworker.send_batch"
CELERY_KEY_PREFIX = keys.CELERY_PREFIX  # kombu's keys: queues, unacked jobs, bindings
queue_key = keys.queue_key


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings chosen for email delivery (docs/workers.md)."""
    transport = {
        # How long Redis keeps an unacknowledged job before another worker may take it: a
        # killed worker's jobs come back after this. Safe to keep short because no job ever
        # waits in a worker's memory (retries and send_at wait in Redis, store.lifecycle).
        "visibility_timeout": settings.redis_visibility_timeout,
        # kombu looks for expired unacked jobs every interval x throttle seconds (100 s by
        # default) under a mutex that a killed worker may hold for its expiry (300 s by
        # default): both shortened so a crashed worker's jobs come back within 5 minutes.
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 30,
        "socket_connect_timeout": settings.redis_timeout,
        "socket_timeout": settings.redis_timeout,
        "global_keyprefix": CELERY_KEY_PREFIX,
    }
    broker_url = settings.redis_url
    if broker_url.startswith("sentinel://"):
        sentinel = sentinel_parts(broker_url)
        broker_url, transport["master_name"] = sentinel.broker_url, sentinel.master_name
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport,
        "broker_connection_timeout": settings.redis_timeout,
        "broker_connection_retry_on_startup": True,
        # A producer must fail fast when Redis is down, not hang a web request.
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_default_queue": TRANSACTIONAL_QUEUE,
        "task_queues": [Queue(TRANSACTIONAL_QUEUE)],
        "task_routes": {
            SEND_EMAIL_TASK: {"queue": TRANSACTIONAL_QUEUE},
            SEND_BATCH_TASK: {"queue": BULK_QUEUE},
        },
        "task_create_missing_queues": True,
        # Task events (CELERY_EVENTS) cost a Redis PUBLISH per task state; off by default,
        # since Flower and celery-exporter turn them on at running workers (enable_events).
        "worker_send_task_events": settings.observability.celery_events,
        "task_send_sent_event": settings.observability.celery_events,
        "worker_hijack_root_logger": False,
        # On SIGQUIT (Heroku: REMAP_SIGTERM=SIGQUIT) finish in-flight sends for up to 20 s,
        # then hand the rest back to Redis, inside Heroku's 30 s before SIGKILL.
        "worker_soft_shutdown_timeout": 20.0,
    }


app = Celery("mailworker")
# A callable default is evaluated lazily, on first access to app.conf: settings are read
# when the app is used, not when it is imported.
app.add_defaults(lambda: celery_config(get_settings()))


def configure_app(settings: Settings | None = None) -> None:
    """Apply (new) settings to the app and drop connections made with the old ones.

    Normal processes never need this: the app reads the settings on first use. Tests and the
    demo, which change the environment after the app may have been touched, call it.
    """
    app.conf.update(celery_config(settings or get_settings()))
    app.close()  # forget pooled broker connections to the previous REDIS_URL
