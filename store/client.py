"""One Redis client per process for mailworker's own keys (status, ledgers, limits)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, cast

import redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from mailworker.settings import Settings, get_settings
from mailworker.store.connect import sync_client

# Lua: ``now`` in milliseconds from the Redis server's clock, the one clock every worker
# on every machine agrees on.
LUA_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""


# A blip (a killed connection, a failover) costs a few retries within about RETRY_SECONDS,
# not a job: every command and pipeline of mailworker's clients is retried on a new
# connection, with jittered backoff. Only Redis staying away reaches the caller.
RETRY_SECONDS = 5.0


def client_options(settings: Settings, *, asynchronous: bool = False) -> dict[str, Any]:
    """The options of every client mailworker makes for its own keys (sync and asyncio)."""
    backoff = ExponentialWithJitterBackoff(base=0.05, cap=1.0)  # 8 tries: about 5 s at most
    return {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "decode_responses": True,
        "retry": (AsyncRetry if asynchronous else Retry)(backoff, retries=8),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    """A client for ``REDIS_URL`` with short timeouts; redis-py reconnects after a fork."""
    return sync_client(
        get_settings().redis_url, **client_options(get_settings()), health_check_interval=30
    )


def reset_redis() -> None:
    """Drop the cached client (after :func:`settings.reload_settings`)."""
    get_redis.cache_clear()


# mailworker's clients decode responses to str (decode_responses=True); redis-py's types
# cannot say so, and its hash writes are typed with invariant keys. These say it once.
Fields = Mapping[Any, Any]


def text_map(reply: Any) -> dict[str, str]:
    """A hash read through one of mailworker's clients."""
    return cast(dict[str, str], reply)


def texts(reply: Any) -> list[str | None]:
    """A list of values (HMGET, ZRANGE) read through one of mailworker's clients."""
    return cast(list[str | None], reply)


def stage_script(pipe: Any, source: str, keys: list[str], args: list[Any]) -> None:
    """Run ``source`` in the caller's pipeline as one EVALSHA. A redis-py Script in a
    pipeline asks SCRIPT EXISTS on every execute (a command per message on the hot path);
    this only sends the EVALSHA. Run the pipeline with :func:`execute_scripted`."""
    pipe.mailworker_scripts = [*getattr(pipe, "mailworker_scripts", []), source]
    pipe.evalsha(_sha(source), len(keys), *keys, *args)


@lru_cache(maxsize=64)
def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


def execute_scripted(client: redis.Redis, build: Any) -> list[Any]:
    """The pipeline ``build(pipe)`` stages, executed. Where Redis does not know a script
    yet (first use, a restart, a failover) it is loaded and the pipeline runs once more:
    every command staged this way must be safe to run twice (the claim steps are)."""
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        build(pipe)
        try:
            return pipe.execute()
        except redis.exceptions.NoScriptError:
            if attempt == 2:
                raise
            for source in getattr(pipe, "mailworker_scripts", []):
                client.script_load(source)
    raise AssertionError("unreachable")


@lru_cache(maxsize=64)
def lua(client: Any, source: str) -> Any:
    """``source`` registered on ``client`` once (sync or asyncio), not per call: the
    SHA is computed once and EVALSHA falls back to loading the script by itself."""
    return client.register_script(source)
