"""Deliver one job over a pooled session: the Celery-free core of the worker.

``deliver`` returns a :class:`DeliveryReport` (which recipients were accepted, which refused
and how) or raises a :class:`~worker.errors.DeliveryError` when no recipient could be tried.
Partial refusal is a result, not an exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiosmtplib

from settings import SmtpAccount
from settings.dkim import DkimKey
from tasks.job import EmailJob
from worker.classify import is_throttle
from worker.errors import PermanentFailure, TransientFailure, translate
from worker.message import Envelope, build_envelope
from worker.pipelining import send_transaction
from worker.pool import ConnectionPool, Session


@dataclass(frozen=True)
class Refusal:
    code: int
    message: str

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500


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
) -> DeliveryReport:
    """Send ``job`` to its not-yet-delivered recipients (DKIM-signed where a key is set).

    Each stage has its own bound: waiting for a pooled session ``acquire_timeout``, opening
    one (connect + TLS + AUTH) ``timeout``, waiting for a rate permit RATE_LIMIT_MAX_SLEEP,
    and the transaction ``timeout``. ``on_accepted`` records the accepted recipients before
    anything else happens, so the window in which a crash could lose that fact stays tiny.
    """
    envelope = build_envelope(job, dkim_keys=dkim_keys)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(None) as deadline:

            def arm() -> None:
                deadline.reschedule(loop.time() + timeout)

            try:
                report = await _send_once(job, account, pool, envelope, pace, arm)
            except _StaleSession:
                # A reused session died under us (idle drop, 421): that attempt never reached
                # the server's queue, so the message goes out once more on a fresh session.
                report = await _send_once(
                    job, account, pool, envelope, pace, arm, allow_stale_retry=False
                )
    except TimeoutError as exc:
        raise TransientFailure(
            account.name,
            f"account {account.name!r}: no answer from {account.address} "
            f"within SMTP_TIMEOUT={timeout} s",
        ) from exc
    if on_accepted is not None and report.accepted:
        await on_accepted(job.id, report.accepted)
    return report


class _StaleSession(Exception):
    pass


async def _send_once(
    job: EmailJob,
    account: SmtpAccount,
    pool: ConnectionPool,
    envelope: Envelope,
    pace: Pace | None,
    arm_deadline: Callable[[], None],
    *,
    allow_stale_retry: bool = True,
) -> DeliveryReport:
    async with pool.session() as session:
        if pace is not None:
            await pace()
        arm_deadline()
        try:
            refused, reply = await _transaction(session, envelope, account)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = {e.recipient: Refusal(e.code, e.message) for e in exc.recipients}
            return DeliveryReport(job.id, account.name, accepted=(), refused=refused)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException) as exc:
            if allow_stale_retry and session.reused and _session_lost(exc):
                raise _StaleSession from exc
            raise translate(exc, account) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise translate(exc, account) from exc
    accepted = tuple(r for r in envelope.recipients if r not in refused)
    return DeliveryReport(job.id, account.name, accepted=accepted, refused=refused, reply=reply)


async def _transaction(
    session: Session, envelope: Envelope, account: SmtpAccount
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
        smtp, envelope.sender, envelope.recipients, envelope.data, mail_options=options
    )
    return {r: Refusal(resp.code, resp.message) for r, resp in refused.items()}, reply


def _session_lost(exc: Exception) -> bool:
    """Did a reused session die of old age (worth one more try now), not of throttling?"""
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return True
    return (
        isinstance(exc, aiosmtplib.SMTPResponseException)
        and exc.code == 421
        and not is_throttle(exc.code, exc.message)
    )
