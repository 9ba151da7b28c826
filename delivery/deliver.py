"""Deliver one job over a pooled session: the Celery-free core of the worker.

``deliver`` returns a :class:`DeliveryReport` (which recipients were accepted, which refused
and how) or raises a :class:`~worker.errors.DeliveryError` when no recipient could be tried.
Partial refusal is a result, not an exception.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, partial

from mailworker.delivery.classify import (
    Decision,
    Stage,
    Verdict,
    classify_error,
    classify_reply,
    is_stale_session,
)
from mailworker.delivery.crashpoint import crash_point
from mailworker.delivery.errors import (
    SMTP_ERRORS,
    Expired,
    PermanentFailure,
    TransientFailure,
    translate,
)
from mailworker.delivery.message import Envelope, build_envelope
from mailworker.delivery.pipelining import send_transaction
from mailworker.delivery.pool import ConnectionPool, Session
from mailworker.settings import SmtpAccount
from mailworker.settings.dkim import DkimKey
from mailworker.store.job import EmailJob


@dataclass(frozen=True)
class Refusal:
    """A server's refusal of one recipient at RCPT."""

    code: int
    message: str

    @cached_property  # read by the delivery (too many?) and again by the task's plan
    def verdict(self) -> Verdict:
        return classify_reply(self.code, self.message, stage=Stage.RCPT)

    @property
    def too_many_recipients(self) -> bool:
        return self.verdict.decision is Decision.TOO_MANY_RECIPIENTS


@dataclass(frozen=True)
class DeliveryReport:
    job_id: str
    account: str
    accepted: tuple[str, ...]
    refused: Mapping[str, Refusal] = field(default_factory=dict)
    reply: str = ""


# Called with (job id, accepted recipients) the moment the server said 250, on the loop.
OnAccepted = Callable[[str, tuple[str, ...]], Awaitable[None]]
# Awaited with a session in hand, right before the transaction: the rate limiter. Taking the
# permit here, not earlier, keeps the rate the server sees the rate the limiter allowed.
Pace = Callable[[], Awaitable[None]]


async def deliver(
    job: EmailJob,
    account: SmtpAccount,
    pool: ConnectionPool,
    *,
    timeout: float,
    on_accepted: OnAccepted | None = None,
    pace: Pace | None = None,
    dkim_keys: Mapping[str, DkimKey] | None = None,
    return_path: str | None = None,
) -> DeliveryReport:
    """Send ``job`` to its not-yet-delivered recipients (DKIM-signed where a key is set).

    Each stage has its own bound: waiting for a pooled session ``acquire_timeout``, opening
    one (connect + TLS + AUTH) ``timeout``, waiting for a rate permit RATE_LIMIT_MAX_SLEEP,
    and the transaction ``timeout``. ``on_accepted`` records each transaction's accepted
    recipients before anything else happens, so the window in which a crash could lose that
    fact stays tiny; an error after one transaction was accepted still raises, and the
    recorded recipients are never sent again.
    """
    envelope = build_envelope(job, dkim_keys=dkim_keys, return_path=return_path)
    progress = _Progress(envelope.recipients)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(None) as deadline:

            def arm() -> None:
                deadline.reschedule(loop.time() + timeout)

            send = partial(_send_once, job, account, pool, envelope, progress, pace, arm)
            try:
                await send(on_accepted)
            except _StaleSession:
                # A reused session died under us (idle drop, a bare 421): that attempt never
                # reached the server's queue, so the message goes out once more, fresh.
                await send(on_accepted, allow_stale_retry=False)
    except TimeoutError as exc:
        raise TransientFailure(
            account.name,
            f"account {account.name!r}: no answer from {account.address} "
            f"within SMTP_TIMEOUT={timeout} s",
        ) from exc
    return DeliveryReport(
        job.id,
        account.name,
        accepted=tuple(progress.accepted),
        refused=progress.refused,
        reply=progress.reply,
    )


class _StaleSession(Exception):
    pass


@dataclass
class _Progress:
    """Who is accepted, refused or still to be tried, across a job's transactions."""

    remaining: tuple[str, ...]
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, Refusal] = field(default_factory=dict)
    reply: str = ""

    def record(
        self, tried: tuple[str, ...], refused: dict[str, Refusal], reply: str
    ) -> tuple[str, ...]:
        """One transaction's result, its accepted recipients returned; recipients refused as
        "too many" stay to be tried."""
        accepted = tuple(r for r in tried if r not in refused)
        self.accepted += accepted
        self.reply = reply or self.reply
        later = tuple(r for r, refusal in refused.items() if refusal.too_many_recipients)
        # RFC 5321 4.5.3.1.10: the rest go in another transaction, as long as each one
        # gets somebody through (a server that takes nobody is not merely counting).
        self.remaining = later if accepted else ()
        self.refused.update(
            {r: refusal for r, refusal in refused.items() if r not in self.remaining}
        )
        return accepted


async def _send_once(
    job: EmailJob,
    account: SmtpAccount,
    pool: ConnectionPool,
    envelope: Envelope,
    progress: _Progress,
    pace: Pace | None,
    arm_deadline: Callable[[], None],
    on_accepted: OnAccepted | None,
    *,
    allow_stale_retry: bool = True,
) -> None:
    async with pool.session() as session:
        if pace is not None:
            await pace()
        arm_deadline()
        first = True
        while progress.remaining:
            tried = progress.remaining
            if job.expires_at is not None and time.time() >= job.expires_at:
                # The waits before this point (a pooled session, a rate permit) ran past it.
                raise Expired(f"job {job.id} expired before its transaction began")
            try:
                refused, reply = await _transaction(session, envelope, tried, account)
            except SMTP_ERRORS as exc:
                error = translate(exc, account)
                stale = allow_stale_retry and first and session.reused
                if stale and is_stale_session(classify_error(error)):
                    raise _StaleSession from exc
                raise error from exc
            first = False
            accepted = progress.record(tried, refused, reply)
            if accepted:
                crash_point("accepted")
            if on_accepted is not None and accepted:
                await on_accepted(job.id, accepted)
                crash_point("recorded")


async def _transaction(
    session: Session, envelope: Envelope, recipients: tuple[str, ...], account: SmtpAccount
) -> tuple[dict[str, Refusal], str]:
    smtp = session.smtp
    options = []
    if envelope.smtputf8:
        if not smtp.supports_extension("smtputf8"):
            raise PermanentFailure(
                account.name,
                "an address needs SMTPUTF8 (non-ASCII local part) and the server "
                "does not support it",
            )
        options.append("SMTPUTF8")
    refused, reply = await send_transaction(
        smtp, envelope.sender, recipients, envelope.data, mail_options=options,
        chunking=account.chunking,
    )  # fmt: skip
    return {r: Refusal(resp.code, resp.message) for r, resp in refused.items()}, reply
