"""One Redis client per process for mailworker's own keys (status, ledgers, limits)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import redis

from mailworker.settings import get_settings
from mailworker.store.connect import sync_client

# Lua: ``now`` in milliseconds from the Redis server's clock, the one clock every worker
# on every machine agrees on.
LUA_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    """A client for ``REDIS_URL`` with short timeouts; redis-py reconnects after a fork."""
    settings = get_settings()
    return sync_client(
        settings.redis_url,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        decode_responses=True,
        health_check_interval=30,
    )


def reset_redis() -> None:
    """Drop the cached client (after :func:`settings.reload_settings`)."""
    get_redis.cache_clear()


@lru_cache(maxsize=64)
def lua(client: Any, source: str) -> Any:
    """``source`` registered on ``client`` once (sync or asyncio), not per call: the
    SHA is computed once and EVALSHA falls back to loading the script by itself."""
    return client.register_script(source)
