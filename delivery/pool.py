"""A pool of authenticated SMTP sessions for one account, owned by one event loop.

Semantics follow httpcore's pool: at most ``max_connections`` sessions; waiters are served
first come, first served and wait up to ``acquire_timeout`` (backpressure, not an error);
sessions are recycled after ``max_messages`` or ``max_age``; a session idle for longer than
``idle_check`` is probed with NOOP before use, because providers drop idle sessions.
A session that is disconnected or got a 421 is discarded; a failed transaction is reset
(RSET) before the session is reused. ``close()`` says QUIT on every idle session.

With a cluster-wide connection cap (:mod:`worker.slots`), opening a session also takes a
cluster slot, waiting first come, first served across processes; a session falling idle
while another process waits is closed so that process gets the slot.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import aiosmtplib

from mailworker.delivery.classify import ends_session
from mailworker.delivery.errors import SMTP_ERRORS, Backpressure, DeliveryError, RateLimited
from mailworker.delivery.slots import ConnectionSlots
from mailworker.settings import PoolOptions

Factory = Callable[[], Awaitable[aiosmtplib.SMTP]]
_QUIT_TIMEOUT = 2.0
IDLE_HAND_OVER_CHECK = 0.25  # seconds between "does another process wait?" checks when idle


@dataclass
class Session:
    smtp: aiosmtplib.SMTP
    created_at: float
    last_used: float
    messages: int = 0
    reused: bool = field(default=False)
    slot: str | None = None  # the cluster slot token, when the account has a cap


@dataclass(frozen=True)
class PoolStats:
    open: int
    idle: int
    in_use: int
    waiting: int
    created: int


class ConnectionPool:
    def __init__(
        self,
        factory: Factory,
        options: PoolOptions,
        *,
        slots: ConnectionSlots | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._options = options
        self._cluster = slots
        self._returned = asyncio.Event()  # set (and replaced) when a session goes idle
        self._idle_watch: asyncio.Task[None] | None = None
        self._clock = clock
        self._slots = asyncio.Semaphore(options.max_connections)
        self._idle: deque[Session] = deque()
        self._in_use = 0
        self._waiting = 0
        self._created = 0
        self._closed = False

    def stats(self) -> PoolStats:
        return PoolStats(
            open=len(self._idle) + self._in_use,
            idle=len(self._idle),
            in_use=self._in_use,
            waiting=self._waiting,
            created=self._created,
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """Check out a ready session; on error it is reset or discarded, never leaked."""
        session = await self._acquire()
        try:
            yield session
        except BaseException as exc:
            await self._release(session, reusable=await self._recover(session, exc))
            raise
        else:
            session.messages += 1
            await self._release(session, reusable=True)

    async def close(self) -> None:
        """QUIT every idle session; sessions in use are closed when they come back."""
        self._closed = True
        idle, self._idle = list(self._idle), deque()
        await asyncio.gather(*(self._discard(s) for s in idle))
        if self._idle_watch is not None:
            self._idle_watch.cancel()
        if self._cluster is not None:
            await self._cluster.close()

    async def _acquire(self) -> Session:
        if self._closed:
            raise Backpressure("", "the connection pool is shutting down")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._options.acquire_timeout
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self._options.acquire_timeout)
        except TimeoutError:
            raise self._busy() from None
        finally:
            self._waiting -= 1
        try:
            session = None
            while session is None:
                session = await self._reuse_idle() or await self._open(deadline)
        except BaseException:
            self._slots.release()
            raise
        self._in_use += 1
        return session

    def _busy(self) -> Backpressure:
        where = "in this process" if self._cluster is None else "in the cluster"
        return Backpressure(
            "",
            f"no free SMTP connection {where} within {self._options.acquire_timeout} s "
            "(acquire_timeout); all are busy",
        )

    async def _reuse_idle(self) -> Session | None:
        while self._idle:
            session = self._idle.pop()  # most recently used first: the warmest session
            now = self._clock()
            if not self._healthy(session, now):
                await self._discard(session)
                continue
            if now - session.last_used > self._options.idle_check:
                try:
                    await session.smtp.noop(timeout=self._options.idle_check)
                except SMTP_ERRORS:
                    await self._discard(session)
                    continue
            session.reused = True
            return session
        return None

    async def _open(self, deadline: float) -> Session | None:
        """A new session, or ``None`` if an idle one came back while waiting for a slot."""
        slot = None
        if self._cluster is not None:
            slot = await self._cluster_slot(deadline)
            if slot is None:
                return None
        try:
            smtp = await self._factory()
        except BaseException:
            if slot is not None:
                await self._cluster.release(slot)  # type: ignore[union-attr]
            raise
        self._created += 1
        now = self._clock()
        return Session(smtp=smtp, created_at=now, last_used=now, slot=slot)

    async def _cluster_slot(self, deadline: float) -> str | None:
        """Wait (polling, first come first served) for a cluster slot, or a local idle session."""
        assert self._cluster is not None
        loop = asyncio.get_running_loop()
        token, waiter = self._cluster.new_token(), self._cluster.new_token()
        delay, granted = 0.01, False
        try:
            while not self._idle:
                if await self._cluster.try_acquire(token, waiter):
                    granted = True
                    return token
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise self._busy()
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._returned.wait(), min(delay, remaining))
                delay = min(delay * 2, 0.25)
            return None
        finally:
            if not granted:
                await self._cluster.forget_waiter(waiter)

    async def _release(self, session: Session, *, reusable: bool) -> None:
        self._in_use -= 1
        session.last_used = self._clock()
        keep = reusable and not self._closed and self._healthy(session, session.last_used)
        try:
            if keep and self._cluster is not None and await self._cluster.someone_else_waits():
                keep = False  # another process has waited longer for a slot: hand it over
            if keep:
                self._idle.append(session)
                self._returned.set()
                self._returned = asyncio.Event()
                if self._cluster is not None and (
                    self._idle_watch is None or self._idle_watch.done()
                ):
                    self._idle_watch = asyncio.create_task(self._hand_over_idle())
            else:
                await self._discard(session)
        finally:
            self._slots.release()

    async def _hand_over_idle(self) -> None:
        """While sessions sit idle here, give their slots to processes that wait for one."""
        assert self._cluster is not None
        while self._idle and not self._closed:
            await asyncio.sleep(IDLE_HAND_OVER_CHECK)
            if self._idle and await self._cluster.someone_else_waits():
                await self._discard(self._idle.popleft())  # the least recently used

    def _healthy(self, session: Session, now: float) -> bool:
        return (
            session.smtp.is_connected
            and session.messages < self._options.max_messages
            and now - session.created_at < self._options.max_age
            and not (self._cluster is not None and self._cluster.lost(session.slot))
        )

    async def _discard(self, session: Session) -> None:
        await quit_session(session.smtp)
        if session.slot is not None and self._cluster is not None:
            await self._cluster.release(session.slot)

    async def _recover(self, session: Session, exc: BaseException) -> bool:
        """After a failed transaction: can the session be reused? RSET it if so."""
        smtp = session.smtp
        if isinstance(exc, RateLimited):
            return True  # nothing was said on the session
        if not smtp.is_connected or isinstance(exc, asyncio.CancelledError | TimeoutError):
            return False
        if not isinstance(exc, DeliveryError) or ends_session(exc.code):
            return False  # not a reply the session survives (a 421, a stale session)
        try:
            await smtp.rset(timeout=_QUIT_TIMEOUT)
        except SMTP_ERRORS:
            smtp.close()
            return False
        return True


async def quit_session(smtp: aiosmtplib.SMTP) -> None:
    """Say QUIT (briefly) and close, whatever state the session is in."""
    if smtp.is_connected:
        with suppress(*SMTP_ERRORS):
            await smtp.quit(timeout=_QUIT_TIMEOUT)
    smtp.close()
