"""Delivery errors, and the one place aiosmtplib's exceptions are translated into them.

DeliveryError                    ``.account``, ``.code``, ``.reply``; never a password
├── TransientFailure             try again later: 4xx, timeouts, dropped connections
│   └── Backpressure             no connection was free in time: not the message's fault
├── PermanentFailure             5xx for the whole message: retrying cannot help
└── AccountProblem               the account, not the message, is broken: needs an operator
    ├── AuthenticationRefused    535 and friends: wrong password or token
    ├── TlsUnavailable           STARTTLS not offered where it is required
    └── CertificateRejected      the server's certificate did not verify

RateLimited (not a DeliveryError: nothing was tried) says a cluster-wide limit leaves no room
for longer than a worker should sleep; the job waits in Redis (``deferred``) until ``wait`` ends.
"""

from __future__ import annotations

import ssl

import aiosmtplib

from mailworker.delivery.stage import Stage
from mailworker.errors import MailworkerError
from mailworker.settings import SmtpAccount


class DeliveryError(MailworkerError):
    """Sending failed. ``str()`` explains what happened and what to do."""

    def __init__(
        self,
        account: str,
        message: str,
        *,
        code: int | None = None,
        reply: str = "",
        stage: Stage = Stage.END_OF_DATA,
    ) -> None:
        self.account = account
        self.code = code
        self.reply = reply
        self.stage = stage  # what the reply answered (worker.classify decides by it)
        super().__init__(message)


class TransientFailure(DeliveryError):
    pass


class Backpressure(TransientFailure):
    """Every connection (per process or cluster-wide) stayed busy for ``acquire_timeout``."""


class PermanentFailure(DeliveryError):
    pass


class AccountProblem(DeliveryError):
    pass


class AuthenticationRefused(AccountProblem):
    pass


class TlsUnavailable(AccountProblem):
    pass


class CertificateRejected(AccountProblem):
    pass


class Stopped(MailworkerError):
    """A batch's owner said stop before this message's transaction (a campaign paused or
    cancelled): nothing was sent, and the message waits or ends with its campaign."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Expired(MailworkerError):
    """The job's expiry came before its transaction began (``send_email(expires_in=...)``):
    it is not sent, and ends ``expired``."""


class RateLimited(MailworkerError):
    def __init__(self, account: str, limit: str, wait: float) -> None:
        self.account = account
        self.limit = limit
        self.wait = wait
        super().__init__(
            f"rate limit {limit} of account {account!r} reached; next send in {wait:.0f} s"
        )


# The stage an aiosmtplib exception type can only come from; others need the caller's word.
_STAGES: tuple[tuple[type[aiosmtplib.SMTPException], Stage], ...] = (
    (aiosmtplib.SMTPConnectResponseError, Stage.CONNECT),
    (aiosmtplib.SMTPHeloError, Stage.EHLO),
    (aiosmtplib.SMTPAuthenticationError, Stage.AUTH),
    (aiosmtplib.SMTPSenderRefused, Stage.MAIL),
    (aiosmtplib.SMTPRecipientRefused, Stage.RCPT),
    (aiosmtplib.SMTPDataError, Stage.END_OF_DATA),
)


# What talking SMTP can raise: the only exceptions other modules catch, by this name.
SMTP_ERRORS: tuple[type[BaseException], ...] = (aiosmtplib.SMTPException, OSError)


def is_authentication_refusal(exc: BaseException) -> bool:
    """Did the server refuse AUTH (a token worth refreshing once)?"""
    return isinstance(exc, aiosmtplib.SMTPAuthenticationError)


def translate(
    exc: BaseException, smtp_account: SmtpAccount, *, stage: Stage | None = None
) -> DeliveryError:
    """Map any exception raised while talking SMTP to one :class:`DeliveryError`.

    ``stage`` is what the session was doing; the exception's own type wins where it says.
    """
    if isinstance(exc, DeliveryError):
        return exc
    for exc_type, known in _STAGES:
        if isinstance(exc, exc_type):
            stage = known
            break
    stage = stage or Stage.END_OF_DATA
    account, address = smtp_account.name, smtp_account.address
    certificate_error = _find_cause(exc, ssl.SSLCertVerificationError)
    if certificate_error is not None:
        return CertificateRejected(
            account,
            f"account {account!r}: the certificate of {address} did not verify "
            f"({certificate_error.verify_message}); if the server uses a private CA, "
            "point SMTP_CA_FILE at its certificate",
        )
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return AuthenticationRefused(
            account,
            f"account {account!r}: {address} refused authentication "
            f"({exc.code} {exc.message}); check the user name and password in "
            f"{smtp_account.variable}",
            code=exc.code,
            reply=exc.message,
            stage=stage,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        kind = TransientFailure if 400 <= exc.code < 500 else PermanentFailure
        return kind(
            account,
            f"account {account!r}: {address} replied {exc.code} {exc.message} (to {stage.value})",
            code=exc.code,
            reply=exc.message,
            stage=stage,
        )
    if isinstance(exc, TimeoutError | ConnectionError | OSError | aiosmtplib.SMTPException):
        return TransientFailure(
            account,
            f"account {account!r}: connection to {address} failed: {type(exc).__name__}: {exc}",
            stage=stage,
        )
    raise exc


def _find_cause(
    exc: BaseException, kind: type[ssl.SSLCertVerificationError]
) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
