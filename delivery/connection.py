"""Open one SMTP session that is ready to send: connected, encrypted, authenticated.

The order is fixed and checked, not left to library defaults: TLS first (implicit, or a
STARTTLS the server *must* offer), then AUTH only if the transport really is encrypted.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import aiosmtplib

from mailworker.delivery.errors import (
    SMTP_ERRORS,
    AccountProblem,
    TlsUnavailable,
    is_authentication_refusal,
    translate,
)
from mailworker.delivery.pipelining import enable_pipelining
from mailworker.delivery.stage import Stage
from mailworker.settings import SmtpAccount

# Returns an OAuth2 access token; ``refresh=True`` asks for a new one (after a 535).
TokenGetter = Callable[[bool], Awaitable[str]]


async def open_connection(
    account: SmtpAccount,
    tls_context: ssl.SSLContext,
    *,
    timeout: float,
    local_hostname: str | None = None,
    token_getter: TokenGetter | None = None,
) -> aiosmtplib.SMTP:
    """Return a connected, TLS-protected, authenticated client, or raise a DeliveryError."""
    smtp = aiosmtplib.SMTP(
        hostname=account.host,
        port=account.port,
        use_tls=account.security == "tls",
        start_tls=False,  # done explicitly below, so a missing STARTTLS is an error
        tls_context=tls_context,
        timeout=timeout,
        local_hostname=local_hostname,
    )
    # One deadline for connect + TLS + AUTH together, not only per socket operation.
    stage = Stage.CONNECT  # what a failure answered: the decision depends on it
    async with asyncio.timeout(timeout):
        try:
            await smtp.connect()
            if account.pipelining:
                enable_pipelining(smtp)
            if account.security == "starttls":
                stage = Stage.EHLO
                await smtp.ehlo()
                if not smtp.supports_extension("starttls"):
                    raise TlsUnavailable(
                        account.name,
                        f"account {account.name!r}: {account.address} does not offer STARTTLS, "
                        f"which {account.variable} (smtp+starttls://) requires; nothing was sent. "
                        "Use the provider's submission port (587 with STARTTLS or 465 with smtps://)",
                    )
                stage = Stage.STARTTLS
                await smtp.starttls()
                stage = Stage.EHLO
                await smtp.ehlo()
            if account.username is not None:
                stage = Stage.AUTH
                await _authenticate(smtp, account, token_getter)
        except BaseException as exc:
            smtp.close()
            if isinstance(exc, Exception):
                raise translate(exc, account, stage=stage) from exc
            raise
    return smtp


def is_encrypted(smtp: aiosmtplib.SMTP) -> bool:
    return smtp.get_transport_info("sslcontext") is not None


async def _authenticate(
    smtp: aiosmtplib.SMTP, account: SmtpAccount, token_getter: TokenGetter | None
) -> None:
    # Settings refuse credentials without TLS; this re-check guards every code path.
    if not is_encrypted(smtp):
        raise TlsUnavailable(account.name, f"account {account.name!r}: refusing AUTH in clear")
    assert account.username is not None
    if account.auth == "xoauth2":
        if token_getter is None:
            raise AccountProblem(
                account.name, f"account {account.name!r}: auth=xoauth2 but no token source"
            )
        try:
            await smtp.auth_xoauth2(account.username, await token_getter(False))
        except SMTP_ERRORS as exc:
            if not is_authentication_refusal(exc):
                raise
            # The token may have been revoked or expired early: refresh once, then give up.
            await smtp.auth_xoauth2(account.username, await token_getter(True))
        return
    password = account.password.get_secret_value() if account.password else ""
    await smtp.login(account.username, password)
