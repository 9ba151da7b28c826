"""What one worker process owns: its event loop, TLS context and connection pools.

Created lazily on first use in the process that uses it, so a prefork child builds its own
after the fork. Pools are keyed by the account's full configuration, so changed settings
(a fixed password) get fresh connections instead of stale ones.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from functools import lru_cache, partial
from typing import Any

import redis.asyncio

from mailworker.delivery.bridge import LoopThread
from mailworker.delivery.connection import open_connection
from mailworker.delivery.deliver import DeliveryReport, OnAccepted, Pace, deliver
from mailworker.delivery.errors import Stopped
from mailworker.delivery.oauth import token_getter_for
from mailworker.delivery.pool import ConnectionPool, PoolStats
from mailworker.delivery.ratelimit import RateLimiter, wait_for_permit
from mailworker.delivery.slots import ConnectionSlots
from mailworker.delivery.tls import account_tls_context
from mailworker.settings import Settings, SmtpAccount, get_settings
from mailworker.store.client import client_options
from mailworker.store.connect import async_client
from mailworker.store.job import EmailJob
from mailworker.store.lifecycle import mark_sent_async

# Asked before each message of a batch: ``None`` to send it, or why not (see Stopped).
Proceed = Callable[[], Awaitable[str | None]]

# Extra seconds a task waits beyond the send's own deadline, so the deadline fires first
# inside the loop and the session is cleaned up there.
_GRACE = 5.0


class Runtime:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self._bridge = LoopThread()
        self._pools: dict[SmtpAccount, ConnectionPool] = {}
        self._hostname = socket.getfqdn()
        self._redis: redis.asyncio.Redis | None = None

    def deliver(self, job: EmailJob, settings: Settings | None = None) -> DeliveryReport:
        settings = settings or get_settings()
        account = settings.account(job.account)
        wait = (
            account.pool.acquire_timeout
            + 2 * settings.smtp_timeout
            + settings.limiter.max_sleep
            + _GRACE
        )
        return self._bridge.run(self._deliver(job, account, settings), timeout=wait)

    def deliver_batch(
        self,
        jobs: list[EmailJob],
        on_accepted: OnAccepted,
        settings: Settings | None = None,
        *,
        proceed: Proceed | None = None,
    ) -> list[DeliveryReport | BaseException]:
        """Send many jobs of one account concurrently over its pool; one result per job.

        ``proceed`` is asked right before each message's transaction (session and rate
        permit in hand); a reason from it stops that message with :class:`Stopped`.
        """
        settings = settings or get_settings()
        account = settings.account(jobs[0].account)
        rounds = math.ceil(len(jobs) / account.pool.max_connections)
        each = account.pool.acquire_timeout + 2 * settings.smtp_timeout + settings.limiter.max_sleep
        sends = (self._deliver(job, account, settings, on_accepted, proceed) for job in jobs)
        return self._bridge.run(
            _gather(sends), timeout=each * rounds + account.pool.acquire_timeout + _GRACE
        )

    def pool_stats(self) -> dict[str, PoolStats]:
        return {account.name: pool.stats() for account, pool in self._pools.items()}

    def close(self, timeout: float = 10.0) -> None:
        """QUIT every pooled connection, then stop the loop."""
        if self._bridge.running and (self._pools or self._redis):
            pools, self._pools = list(self._pools.values()), {}
            client, self._redis = self._redis, None
            try:
                self._bridge.run(_close_all(pools, client), timeout=timeout)
            except TimeoutError:
                pass
        self._bridge.stop()

    async def _deliver(
        self,
        job: EmailJob,
        account: SmtpAccount,
        settings: Settings,
        on_accepted: OnAccepted | None = None,
        proceed: Proceed | None = None,
    ) -> DeliveryReport:
        pool = self._pools.get(account)
        if pool is None:
            pool = self._pools[account] = self._new_pool(account, settings)
        pace: Pace | None = None
        domains = frozenset(r.rpartition("@")[2] for r in job.recipients if r not in job.done)
        limiter = _limiter(account, domains, settings.limiter.throttle_cooldown)
        if limiter.active:
            pace = partial(wait_for_permit, limiter, self.async_redis(), settings.limiter.max_sleep)
        if proceed is not None:
            pace = partial(_pace_then_ask, pace, proceed)
        return await deliver(
            job,
            account,
            pool,
            timeout=settings.smtp_timeout,
            on_accepted=on_accepted or partial(self._record_sent, job.account),
            pace=pace,
            dkim_keys=settings.dkim,
            return_path=settings.feedback.return_path,
        )

    async def _record_sent(self, account: str, job_id: str, recipients: tuple[str, ...]) -> None:
        await mark_sent_async(self.async_redis(), job_id, recipients, account)

    def async_redis(self) -> redis.asyncio.Redis:
        """This process's asyncio Redis client, for code running on the loop."""
        if self._redis is None:  # created on the loop that uses it, after any fork
            settings = get_settings()
            options = client_options(settings, asynchronous=True)
            self._redis = async_client(settings.redis_url, **options)
        return self._redis

    def _new_pool(self, account: SmtpAccount, settings: Settings) -> ConnectionPool:
        slots = None
        if account.limits.cluster_connections is not None:
            slots = ConnectionSlots(
                self.async_redis,
                account.name,
                account.limits.cluster_connections,
                settings.limiter.connection_lease,
            )
        factory = partial(
            open_connection,
            account,
            account_tls_context(account, settings.smtp_ca_file),
            timeout=settings.smtp_timeout,
            local_hostname=self._hostname,
            token_getter=token_getter_for(account),
        )
        return ConnectionPool(factory, account.pool, slots=slots)


@lru_cache(maxsize=1024)
def _limiter(account: SmtpAccount, domains: frozenset[str], cooldown: float) -> RateLimiter:
    return RateLimiter(account, domains, cooldown)


async def _pace_then_ask(pace: Pace | None, proceed: Proceed) -> None:
    if pace is not None:
        await pace()
    why = await proceed()
    if why is not None:
        raise Stopped(why)


async def _gather(sends: Iterable[Awaitable[DeliveryReport]]) -> list[Any]:
    return await asyncio.gather(*sends, return_exceptions=True)


async def _close_all(pools: list[ConnectionPool], client: redis.asyncio.Redis | None) -> None:
    await asyncio.gather(*(pool.close() for pool in pools))
    if client is not None:
        await client.aclose()


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """This process's runtime, created on first use (and again in a forked child)."""
    global _runtime
    with _lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = Runtime()
        return _runtime


def close_runtime() -> None:
    global _runtime
    with _lock:
        runtime, _runtime = _runtime, None
    if runtime is not None and runtime.pid == os.getpid():
        runtime.close()


def current_runtime() -> Runtime | None:
    """This process's runtime if it has one already (for metrics; never creates one)."""
    runtime = _runtime
    return runtime if runtime is not None and runtime.pid == os.getpid() else None
