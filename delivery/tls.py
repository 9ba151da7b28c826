"""The client TLS context: built once per process, verified by default, TLS 1.2 at least.

Building a context with the full system CA bundle costs tens of milliseconds of CPU; doing it
per connection is a measurable slowdown, so every connection of the process shares one
context per (CA file, verification) pair. An account with ``tls_verify=off`` gets a context
that still encrypts (TLS 1.2+) but accepts any certificate, and that says so in a WARNING
naming the account on every handshake, so nobody forgets it was switched off.
"""

from __future__ import annotations

import logging
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any

from mailworker.settings import SmtpAccount

log = logging.getLogger("mailworker.tls")


def client_tls_context(extra_ca_file: Path | None = None) -> ssl.SSLContext:
    """System CAs plus ``SMTP_CA_FILE``; hostname and certificate checks on."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if extra_ca_file is not None:
        context.load_verify_locations(cafile=str(extra_ca_file))
    return context


def account_tls_context(account: SmtpAccount, extra_ca_file: Path | None = None) -> ssl.SSLContext:
    """The context for ``account``'s connections: shared, unverified only if it asked to be."""
    if account.tls_verify:
        return _verified(extra_ca_file)
    return _unverified(account.name, account.variable)


@lru_cache(maxsize=8)
def _verified(extra_ca_file: Path | None) -> ssl.SSLContext:
    return client_tls_context(extra_ca_file)


@lru_cache(maxsize=64)
def _unverified(name: str, variable: str) -> ssl.SSLContext:
    context = _UnverifiedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.account = name
    context.variable = variable
    return context


class _UnverifiedContext(ssl.SSLContext):
    """Warns on every TLS handshake it is used for: asyncio starts each one with wrap_bio
    (implicit TLS and STARTTLS alike), so the warning needs no help from the caller."""

    account = ""
    variable = ""

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        log.warning(
            "account %r: TLS certificate and host name NOT verified (tls_verify=off in %s); "
            "anyone on the network path can read this session and its password",
            self.account,
            self.variable,
        )
        return super().wrap_bio(*args, **kwargs)
