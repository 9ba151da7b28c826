"""A cluster-wide cap on one account's concurrent SMTP sessions: a leased semaphore in Redis.

    mailworker:{account:<name>}:connections        ZSET slot token → lease expiry (ms)
    mailworker:{account:<name>}:connection-queue   ZSET waiter → when it started waiting
    mailworker:{account:<name>}:connection-alive   ZSET waiter → waiter lease expiry

Each open session holds a slot whose lease its process renews every third of the lease; a
killed worker's slots expire by themselves within one lease (``CONNECTION_LEASE_SECONDS``).
Waiters queue first come, first served across processes (a free slot goes to the oldest
waiter), and a process whose session is released while another process has waited for half
a second gives the slot up, so no worker starves behind another's busy or idle connections.
Time comes from Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import uuid
from collections.abc import Callable
from contextlib import suppress

import redis
import redis.asyncio
import redis.exceptions

from mailworker.store import keys
from mailworker.store.client import LUA_NOW_MS, get_redis, lua

log = logging.getLogger("mailworker.pool")

_PRUNE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[2], w)
  redis.call('ZREM', KEYS[3], w)
end
"""
# KEYS: holders, queue, alive. ARGV: cap, token, waiter, lease ms, waiter lease ms.
_ACQUIRE = (
    LUA_NOW_MS
    + _PRUNE
    + """
local lease = tonumber(ARGV[4])
local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
local ahead = redis.call('ZRANK', KEYS[2], ARGV[3]) or redis.call('ZCARD', KEYS[2])
if free > ahead then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], 2 * lease)
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('ZREM', KEYS[3], ARGV[3])
  return 1
end
redis.call('ZADD', KEYS[2], 'NX', now, ARGV[3])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[3])
redis.call('PEXPIRE', KEYS[2], 2 * lease)
redis.call('PEXPIRE', KEYS[3], 2 * lease)
return 0
"""
)
# KEYS: holders. ARGV: lease ms, tokens... Returns the tokens whose lease had already expired.
_RENEW = (
    LUA_NOW_MS
    + """
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[1]))
return lost
"""
)
# KEYS: holders, queue, alive. ARGV: this process's prefix, hand-over age ms.
# 1 if the oldest waiter is another process's and has waited at least that long.
_FOREIGN_FIRST = (
    LUA_NOW_MS
    + _PRUNE
    + """
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[1] and string.sub(first[1], 1, #ARGV[1]) ~= ARGV[1]
   and now - tonumber(first[2]) >= tonumber(ARGV[2]) then
  return 1
end
return 0
"""
)
_WAITER_LEASE_MS = 2000  # a waiter polls at least every 250 ms; 2 s without one = gone
# A session is handed to another process once that process has waited this long: each
# hand-over costs a new TLS + AUTH handshake, so the holder sends a batch first.
HAND_OVER_AFTER_MS = 500


class ConnectionSlots:
    """Slots of one account's cluster-wide connection cap, as seen by one process."""

    def __init__(
        self,
        client: Callable[[], redis.asyncio.Redis],
        account: str,
        cap: int,
        lease: float,
    ) -> None:
        self.account = account
        self.cap = cap
        self._client = client
        self._keys = [
            keys.account(account, "connections"),
            keys.account(account, "connection-queue"),
            keys.account(account, "connection-alive"),
        ]
        self._lease_ms = int(lease * 1000)
        self._prefix = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:"
        self._ids = itertools.count()
        self._held: set[str] = set()
        self._lost: set[str] = set()
        self._renewer: asyncio.Task[None] | None = None

    def new_token(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    async def try_acquire(self, token: str, waiter: str) -> bool:
        """Take a slot for ``token`` if one is free for ``waiter``; else queue the waiter."""
        script = lua(self._client(), _ACQUIRE)
        args = [self.cap, token, waiter, self._lease_ms, _WAITER_LEASE_MS]
        if not await script(keys=self._keys, args=args):
            return False
        self._held.add(token)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever())
        return True

    async def forget_waiter(self, waiter: str) -> None:
        with suppress(redis.exceptions.RedisError, OSError):
            pipe = self._client().pipeline(transaction=True)
            pipe.zrem(self._keys[1], waiter)
            pipe.zrem(self._keys[2], waiter)
            await pipe.execute()

    async def release(self, token: str) -> None:
        self._held.discard(token)
        self._lost.discard(token)
        try:
            await self._client().zrem(self._keys[0], token)
        except (redis.exceptions.RedisError, OSError) as exc:
            # Not fatal: the slot's lease runs out by itself.
            log.warning("account %s: could not release a connection slot: %s", self.account, exc)

    async def someone_else_waits(self) -> bool:
        """Is the longest waiter for a slot in another process? Then ours should yield."""
        script = lua(self._client(), _FOREIGN_FIRST)
        try:
            args = [self._prefix, HAND_OVER_AFTER_MS]
            return bool(await script(keys=self._keys, args=args))
        except (redis.exceptions.RedisError, OSError):
            return False

    def lost(self, token: str | None) -> bool:
        """Did this slot's lease lapse (the process stalled)? Its session must close."""
        return token is not None and token in self._lost

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with suppress(asyncio.CancelledError):
                await self._renewer

    async def renew(self) -> None:
        if not self._held:
            return
        script = lua(self._client(), _RENEW)
        lost = await script(keys=self._keys[:1], args=[self._lease_ms, *sorted(self._held)])
        if lost:
            log.warning(
                "account %s: %d connection slot lease(s) lapsed; closing those sessions",
                self.account,
                len(lost),
            )
            self._lost.update(lost)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                await self.renew()
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("account %s: renewing connection slots failed: %s", self.account, exc)


def slots_in_use(account: str, client: redis.Redis | None = None) -> tuple[int, int]:
    """``(held, waiting)``: live connection slots and live waiters of ``account`` now."""
    client = client or get_redis()
    seconds, micros = client.time()
    now = seconds * 1000 + micros // 1000
    pipe = client.pipeline(transaction=False)
    pipe.zcount(keys.account(account, "connections"), now, "+inf")
    pipe.zcount(keys.account(account, "connection-alive"), now, "+inf")
    held, waiting = pipe.execute()
    return int(held), int(waiting)
