"""A pool of authenticated SMTP sessions for one account, owned by one event loop.

Semantics follow httpcore's pool: at most ``max_connections`` sessions; waiters are served
first come, first served and wait up to ``acquire_timeout`` (backpressure, not an error);
sessions are recycled after ``max_messages`` or ``max_age``; a session idle for longer than
``idle_check`` is probed with NOOP before use, because providers drop idle sessions.
A session that is disconnected or got a 421 is discarded; a failed transaction is reset
(RSET) before the session is reused. ``close()`` says QUIT on every idle session.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import aiosmtplib

from settings import PoolOptions
from worker.errors import DeliveryError, TransientFailure

Factory = Callable[[], Awaitable[aiosmtplib.SMTP]]
_QUIT_TIMEOUT = 2.0


@dataclass
class Session:
    smtp: aiosmtplib.SMTP
    created_at: float
    last_used: float
    messages: int = 0
    reused: bool = field(default=False)


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._options = options
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
        await asyncio.gather(*(quit_session(s.smtp) for s in idle))

    async def _acquire(self) -> Session:
        if self._closed:
            raise TransientFailure("", "the connection pool is shutting down")
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self._options.acquire_timeout)
        except TimeoutError:
            raise TransientFailure(
                "",
                f"no free SMTP connection within {self._options.acquire_timeout} s "
                "(acquire_timeout); all are busy",
            ) from None
        finally:
            self._waiting -= 1
        try:
            session = await self._reuse_idle() or await self._open()
        except BaseException:
            self._slots.release()
            raise
        self._in_use += 1
        return session

    async def _reuse_idle(self) -> Session | None:
        while self._idle:
            session = self._idle.pop()  # most recently used first: the warmest session
            now = self._clock()
            if not session.smtp.is_connected or self._expired(session, now):
                await quit_session(session.smtp)
                continue
            if now - session.last_used > self._options.idle_check:
                try:
                    await session.smtp.noop(timeout=self._options.idle_check)
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    session.smtp.close()
                    continue
            session.reused = True
            return session
        return None

    async def _open(self) -> Session:
        smtp = await self._factory()
        self._created += 1
        now = self._clock()
        return Session(smtp=smtp, created_at=now, last_used=now)

    async def _release(self, session: Session, *, reusable: bool) -> None:
        self._in_use -= 1
        session.last_used = self._clock()
        keep = (
            reusable
            and not self._closed
            and session.smtp.is_connected
            and not self._expired(session, session.last_used)
        )
        try:
            if keep:
                self._idle.append(session)
            else:
                await quit_session(session.smtp)
        finally:
            self._slots.release()

    def _expired(self, session: Session, now: float) -> bool:
        return (
            session.messages >= self._options.max_messages
            or now - session.created_at >= self._options.max_age
        )

    async def _recover(self, session: Session, exc: BaseException) -> bool:
        """After a failed transaction: can the session be reused? RSET it if so."""
        smtp = session.smtp
        if not smtp.is_connected or isinstance(exc, asyncio.CancelledError | TimeoutError):
            return False
        code = (
            exc.code if isinstance(exc, aiosmtplib.SMTPResponseException | DeliveryError) else None
        )
        if code == 421 or not isinstance(exc, aiosmtplib.SMTPException | DeliveryError):
            return False
        try:
            await smtp.rset(timeout=_QUIT_TIMEOUT)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            smtp.close()
            return False
        return True


async def quit_session(smtp: aiosmtplib.SMTP) -> None:
    """Say QUIT (briefly) and close, whatever state the session is in."""
    if smtp.is_connected:
        with suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await smtp.quit(timeout=_QUIT_TIMEOUT)
    smtp.close()
