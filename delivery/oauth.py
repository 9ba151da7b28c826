"""OAuth2 access tokens for XOAUTH2 accounts (Microsoft 365, Google Workspace).

A token comes either from a provider the application registers
(:func:`register_token_provider`) or from the OAuth2 client-credentials grant configured on
the account URL (``?auth=xoauth2&token_url=...&client_id=...&scope=...``, the client secret
as the URL password; ``token_url`` is https, or plain http with an explicit
``insecure_token_url=on`` and a WARNING on every request). Tokens are cached, refreshed
``REFRESH_MARGIN`` seconds before they expire and once more after a 535; they are never
logged.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailworker.delivery.errors import AuthenticationRefused
from mailworker.observe.sentry import remember_secret
from mailworker.settings import SmtpAccount

log = logging.getLogger("mailworker.oauth")

REFRESH_MARGIN = 60.0


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: float  # time.time() seconds


# Sync or async; returns a token string (assumed valid for an hour) or an AccessToken.
TokenProvider = Callable[[], "str | AccessToken | Awaitable[str | AccessToken]"]

_providers: dict[str, TokenProvider] = {}


def register_token_provider(account: str, provider: TokenProvider) -> None:
    """Make ``account`` (an ``auth=xoauth2`` account) take its tokens from ``provider``.

    Call it in a module the worker imports, before the first send.
    """
    _providers[account] = provider


class TokenCache:
    """Hands out a cached token and refreshes it before expiry, or on demand."""

    def __init__(
        self, fetch: Callable[[], Awaitable[AccessToken]], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, refresh: bool) -> str:
        async with self._lock:
            token = self._token
            if refresh or token is None or token.expires_at - REFRESH_MARGIN <= self._clock():
                token = self._token = await self._fetch()
                remember_secret(token.value)  # masked in every Sentry event from now on
            return token.value


def token_getter_for(account: SmtpAccount) -> TokenCache | None:
    """The token source of an ``auth=xoauth2`` account, or ``None`` for password accounts."""
    if account.auth != "xoauth2":
        return None
    provider = _providers.get(account.name)
    if provider is not None:
        return TokenCache(lambda: _call_provider(provider))
    if account.token_url and account.client_id:
        return TokenCache(lambda: asyncio.to_thread(_client_credentials, account))
    return None


async def _call_provider(provider: TokenProvider) -> AccessToken:
    result = provider()
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, AccessToken):
        return result
    return AccessToken(str(result), time.time() + 3600)


def _client_credentials(account: SmtpAccount) -> AccessToken:
    assert account.token_url is not None and account.client_id is not None
    if not account.token_url.lower().startswith("https://"):
        if not account.insecure_token_url:  # settings refuse it; never post a secret in clear
            raise AuthenticationRefused(
                account.name, f"account {account.name!r}: token_url is not https"
            )
        log.warning(
            "account %r: the OAuth client secret goes to the token endpoint over plain http "
            "(insecure_token_url=on in %s); anyone on the network path can read it",
            account.name,
            account.variable,
        )
    form = {
        "grant_type": "client_credentials",
        "client_id": account.client_id,
        "client_secret": account.password.get_secret_value() if account.password else "",
    }
    if account.scope:
        form["scope"] = account.scope
    request = urllib.request.Request(
        account.token_url,
        data=urllib.parse.urlencode(form).encode(),
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
            body = json.load(response)
        return AccessToken(body["access_token"], time.time() + float(body.get("expires_in", 3600)))
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        detail = exc.code if isinstance(exc, urllib.error.HTTPError) else type(exc).__name__
        raise AuthenticationRefused(
            account.name,
            f"account {account.name!r}: the token endpoint {account.token_url} did not issue "
            f"a token ({detail}); check client_id, the client secret and scope in "
            f"{account.variable}",
        ) from None
