"""Cluster-wide send rates per account and per recipient domain, enforced in Redis.

Every window ``N per T`` is a sliding window: a send is allowed only if fewer than N sends
were counted in the last T, across every worker process on every machine, so no interval of
length T ever sees more than N. Counts live in 50 buckets of T/50 per window (a Redis hash,
bounded memory even for ``50000/d``); a bucket leaves the window only once all of it is
older than T, which errs on the safe side by at most T/50.

Rates (windows of a second or a minute) are also paced, GCRA-style: one send every T/N, with
bursts of at most ceil(N/10) back to back, because servers (and their throttles) take an
even stream better than N at once. Quotas (hours, days) are used as fast as rates allow.

One Lua script checks every window of a send (account and recipient domains) and takes a
permit from all of them or from none; time comes from the Redis server, not worker clocks.
A running sum per window keeps each check to a few hash reads. With limits far above the
send rate (at least LEASE_MIN sends per LEASE_SECONDS in every window) a process takes up
to LEASE_MAX permits per round trip and uses them within LEASE_SECONDS, or loses them.

Adaptive slow-down: a throttling reply halves the account's adaptive windows (per second and
per minute, see :attr:`settings.limits.Rate.adaptive`), at most once per half cool-down,
down to 1/16; every cool-down without throttling doubles them back until the configured rate.

    mailworker:{account:<name>}:rate:<T>            HASH bucket → sends
    mailworker:{account:<name>}:rate:<domain>:<T>   HASH bucket → sends
    mailworker:{account:<name>}:slow                HASH {factor, at}
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio

from mailworker.delivery.errors import RateLimited
from mailworker.settings import AccountLimits, Rate, SmtpAccount
from mailworker.store import keys
from mailworker.store.client import LUA_NOW_MS, get_redis, lua

BUCKETS = 50
MIN_FACTOR = 1 / 16
# With limits far above the send rate, a process takes a few permits per Redis round trip
# and must use them within LEASE_SECONDS (unused ones lapse: never over a limit).
LEASE_SECONDS = 0.1
LEASE_MIN, LEASE_MAX = 4, 32

_FACTOR = """
local function factor_at(now, cooldown)
  local slow = redis.call('HMGET', KEYS[1], 'factor', 'at')
  if not slow[1] then return 1 end
  local steps = math.floor((now - tonumber(slow[2])) / cooldown)
  return math.min(1, tonumber(slow[1]) * 2 ^ steps)
end
"""
# KEYS: slow, then one hash per window. ARGV: cooldown ms, buckets, permits wanted, then per
# window: limit, span ms, paced (1/0), adaptive (1/0).
# Returns {1, permits granted (1..wanted)} or {0, wait ms, index of the blocking window}.
_ACQUIRE = (
    LUA_NOW_MS
    + _FACTOR
    + """
local cooldown, nb, grant = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local factor = factor_at(now, cooldown)
local worst_wait, worst, updates = 0, 0, {}
for i = 2, #KEYS do
  local key, at = KEYS[i], 4 + (i - 2) * 4
  local limit, span = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local paced, adaptive = ARGV[at + 2] == '1', ARGV[at + 3] == '1'
  if adaptive then limit = math.max(1, math.floor(limit * factor)) end
  local width = span / nb
  local current, oldest = math.floor(now / width), math.floor((now - span) / width)
  -- 'sum' counts the live buckets from 'first' on: each call drops only what just expired.
  local meta = redis.call('HMGET', key, 'sum', 'first', 'tat')
  local sum, first, tat = tonumber(meta[1]) or 0, tonumber(meta[2]) or current, now
  if meta[3] then tat = math.max(tonumber(meta[3]), now) end
  if first < oldest then
    if oldest - first > nb then
      redis.call('DEL', key)
      sum = 0
    else
      for b = first, oldest - 1 do
        local n = tonumber(redis.call('HGET', key, b) or '0')
        if n > 0 then
          sum = sum - n
          redis.call('HDEL', key, b)
        end
      end
    end
    first = oldest
  end
  if sum >= limit then
    local freed, wait = 0, span
    for b = first, current do
      freed = freed + tonumber(redis.call('HGET', key, b) or '0')
      if sum - freed < limit then
        wait = (b + 1) * width + span - now
        break
      end
    end
    if wait > worst_wait then worst_wait, worst = wait, i - 1 end
  else
    grant = math.min(grant, limit - sum)
  end
  local interval = false
  if paced then
    -- GCRA: one send per interval, up to `burst` back to back.
    interval = span / limit
    local tolerance = (math.max(1, math.ceil(limit / 10)) - 1) * interval
    if tat - now > tolerance then
      local wait = tat - tolerance - now
      if wait > worst_wait then worst_wait, worst = wait, i - 1 end
    else
      grant = math.min(grant, math.floor((tolerance - (tat - now)) / interval) + 1)
    end
  end
  updates[i - 1] = {current, span + width, interval, tat, sum, first}
end
if worst > 0 then return {0, math.ceil(worst_wait), worst} end
for i = 2, #KEYS do
  local u = updates[i - 1]
  redis.call('HINCRBY', KEYS[i], u[1], grant)
  if u[3] then
    redis.call('HSET', KEYS[i], 'sum', u[5] + grant, 'first', u[6], 'tat', u[4] + grant * u[3])
  else
    redis.call('HSET', KEYS[i], 'sum', u[5] + grant, 'first', u[6])
  end
  redis.call('PEXPIRE', KEYS[i], math.ceil(u[2]))
end
return {1, grant}
"""
)
# KEYS: slow. ARGV: cooldown ms, minimum factor. Returns the new factor in thousandths.
_SLOW_DOWN = (
    LUA_NOW_MS
    + _FACTOR
    + """
local cooldown, floor = tonumber(ARGV[1]), tonumber(ARGV[2])
local factor = factor_at(now, cooldown)
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
if factor < 1 and now - at < cooldown / 2 then return math.floor(factor * 1000) end
factor = math.max(floor, factor / 2)
redis.call('HSET', KEYS[1], 'factor', factor, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(cooldown * (math.log(1 / factor) / math.log(2) + 1)))
return math.floor(factor * 1000)
"""
)
# KEYS: slow, then window hashes. ARGV: cooldown ms, buckets, span per window.
# Returns {factor thousandths, count per window...}.
_USAGE = (
    LUA_NOW_MS
    + _FACTOR
    + """
local out = {math.floor(factor_at(now, tonumber(ARGV[1])) * 1000)}
for i = 2, #KEYS do
  local span = tonumber(ARGV[i + 1])
  local oldest = math.floor((now - span) / (span / tonumber(ARGV[2])))
  local raw, total = redis.call('HGETALL', KEYS[i]), 0
  for j = 1, #raw, 2 do
    local b = tonumber(raw[j])
    if b and b >= oldest then total = total + tonumber(raw[j + 1]) end
  end
  table.insert(out, total)
end
return out
"""
)


@dataclass(frozen=True)
class Window:
    """One limit as it applies to one send: the rate and its Redis hash."""

    rate: Rate
    key: str
    label: str
    adaptive: bool  # lowered by throttling replies (the account's own rates)

    @property
    def paced(self) -> bool:
        return self.rate.adaptive  # any rate (per second or minute) is spread evenly


@dataclass(frozen=True)
class RateAnswer:
    granted: bool
    wait: float = 0.0  # seconds until a permit may be free, when refused
    blocked_by: str = ""  # e.g. "50/d" or "gmail.com 20/s"
    count: int = 0  # permits granted (more than one only when asked for a lease)


def windows_for(account: SmtpAccount, domains: Iterable[str]) -> tuple[Window, ...]:
    limits: AccountLimits = account.limits
    windows = [
        Window(rate, keys.account(account.name, f"rate:{rate.seconds}"), str(rate), rate.adaptive)
        for rate in limits.rates
    ]
    for domain in sorted({d.lower() for d in domains}):
        windows += [
            Window(
                rate,
                keys.account(account.name, f"rate:{domain}:{rate.seconds}"),
                f"{domain} {rate}",
                False,
            )
            for rate in limits.for_domain(domain)
        ]
    return tuple(windows)


class RateLimiter:
    """Permits for one send: one from every window that applies to it, or none."""

    def __init__(self, account: SmtpAccount, domains: Iterable[str], cooldown: float) -> None:
        self.account = account.name
        self.windows = windows_for(account, domains)
        self._slow = keys.account(account.name, "slow")
        self._cooldown_ms = int(cooldown * 1000)

    @property
    def active(self) -> bool:
        return bool(self.windows)

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(w.key for w in self.windows)

    @property
    def lease_size(self) -> int:
        """Permits worth taking at once: what every window grants in LEASE_SECONDS, if
        that is at least LEASE_MIN (limits far above one send at a time), else one."""
        size = min(w.rate.limit * LEASE_SECONDS // w.rate.seconds for w in self.windows)
        return min(int(size), LEASE_MAX) if size >= LEASE_MIN else 1

    def acquire(self, client: redis.Redis | None = None, want: int = 1) -> RateAnswer:
        client = client or get_redis()
        return self._answer(lua(client, _ACQUIRE)(**self._call(want)))

    async def acquire_async(self, client: redis.asyncio.Redis, want: int = 1) -> RateAnswer:
        return self._answer(await lua(client, _ACQUIRE)(**self._call(want)))

    def _call(self, want: int) -> dict[str, list[Any]]:
        args: list[Any] = [self._cooldown_ms, BUCKETS, want]
        for window in self.windows:
            args += [
                window.rate.limit,
                window.rate.seconds * 1000,
                int(window.paced),
                int(window.adaptive),
            ]
        return {"keys": [self._slow, *(w.key for w in self.windows)], "args": args}

    def _answer(self, reply: Sequence[Any]) -> RateAnswer:
        if int(reply[0]) == 1:
            return RateAnswer(True, count=int(reply[1]))
        return RateAnswer(False, int(reply[1]) / 1000, self.windows[int(reply[2]) - 1].label)


def slow_down(account: str, cooldown: float, client: redis.Redis | None = None) -> float:
    """Record a throttling reply; return the account's new rate factor (1.0 = configured)."""
    client = client or get_redis()
    script = lua(client, _SLOW_DOWN)
    reply = script(keys=[keys.account(account, "slow")], args=[int(cooldown * 1000), MIN_FACTOR])
    return int(reply) / 1000


@dataclass(frozen=True)
class WindowUsage:
    label: str
    limit: int
    effective_limit: int
    used: int


def usage(
    account: SmtpAccount, cooldown: float, client: redis.Redis | None = None
) -> tuple[float, list[WindowUsage]]:
    """The account's rate factor and, per configured window, the sends counted in it now."""
    client = client or get_redis()
    domains = [domain for domain, _ in account.limits.domain_rates]
    windows = windows_for(account, domains)
    script = lua(client, _USAGE)
    reply = script(
        keys=[keys.account(account.name, "slow"), *(w.key for w in windows)],
        args=[int(cooldown * 1000), BUCKETS, *(w.rate.seconds * 1000 for w in windows)],
    )
    factor = int(reply[0]) / 1000
    return factor, [
        WindowUsage(
            w.label,
            w.rate.limit,
            max(1, int(w.rate.limit * factor)) if w.adaptive else w.rate.limit,
            int(used),
        )
        for w, used in zip(windows, reply[1:], strict=True)
    ]


async def wait_for_permit(
    limiter: RateLimiter, client: redis.asyncio.Redis, max_sleep: float
) -> None:
    """Return once a send is allowed; sleep through short waits (``max_sleep`` in all).

    A longer wait raises :class:`~worker.errors.RateLimited`: the caller defers the job
    rather than hold a worker. A little jitter keeps waiting workers from all asking again
    in the same millisecond.
    """
    want = limiter.lease_size
    if want == 1:  # limits near the send rate: every send asks Redis
        await _acquire(limiter, client, 1, max_sleep)
        return
    loop = asyncio.get_running_loop()
    lease = _leases.setdefault(limiter.key, _Lease())
    async with lease.lock:  # one refill at a time; the others then take from it
        if lease.count > 0 and lease.expires > loop.time():
            lease.count -= 1
            return
        granted = await _acquire(limiter, client, want, max_sleep)
        lease.count, lease.expires = granted - 1, loop.time() + LEASE_SECONDS


async def _acquire(
    limiter: RateLimiter, client: redis.asyncio.Redis, want: int, max_sleep: float
) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_sleep
    while not (answer := await limiter.acquire_async(client, want)).granted:
        pause = answer.wait * random.uniform(1.0, 1.1)
        if loop.time() + pause > deadline:
            raise RateLimited(limiter.account, answer.blocked_by, answer.wait)
        await asyncio.sleep(pause)
    return answer.count


@dataclass
class _Lease:
    """Permits this process took ahead from Redis, to use within LEASE_SECONDS or lose."""

    count: int = 0
    expires: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


# Per process, used only on its event loop thread (the worker's one loop).
_leases: dict[tuple[str, ...], _Lease] = {}
