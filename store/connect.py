"""Redis clients for ``REDIS_URL``, including Redis Sentinel.

``redis://``, ``rediss://`` and ``unix://`` go to redis-py's ``from_url``. Sentinel URLs use
Celery's syntax, one ``sentinel://`` per sentinel, plus the monitored master's name::

    sentinel://:redis-password@10.0.0.1:26379;sentinel://10.0.0.2:26379/0?master_name=mymaster

mailworker's own clients ask the sentinels for the current master, as Celery does for the
broker (see :func:`sentinel_parts`), so a failover moves both.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from mailworker.settings.redis_url import sentinel_parts


def sync_client(url: str, **options: Any) -> redis.Redis:
    if not url.startswith("sentinel://"):
        return redis.Redis.from_url(url, **options)
    parts = sentinel_parts(url)
    sentinel = redis.sentinel.Sentinel(list(parts.sentinels), **_sentinel_options(options))
    return sentinel.master_for(parts.master_name, db=parts.db, password=parts.password, **options)


def async_client(url: str, **options: Any) -> redis.asyncio.Redis:
    if not url.startswith("sentinel://"):
        return redis.asyncio.Redis.from_url(url, **options)
    parts = sentinel_parts(url)
    sentinel = redis.asyncio.sentinel.Sentinel(list(parts.sentinels), **_sentinel_options(options))
    return sentinel.master_for(parts.master_name, db=parts.db, password=parts.password, **options)


def _sentinel_options(options: dict[str, Any]) -> dict[str, Any]:
    timeouts = ("socket_timeout", "socket_connect_timeout")
    return {"sentinel_kwargs": {k: options[k] for k in timeouts if k in options}}
