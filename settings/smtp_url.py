"""Parse ``SMTP_URL`` / ``SMTP_URL_<NAME>`` into an :class:`SmtpAccount`.

Schemes (the public contract):

* ``smtp+starttls://user:pass@host:587``: plaintext connect, STARTTLS *required*.
* ``smtps://user:pass@host:465``: implicit TLS from the first byte.
* ``smtp://host:25``: a local relay, only without credentials (AUTH never goes in clear).

Query parameters tune the per-process connection pool (see :class:`PoolOptions`), set the
account's cluster-wide limits (see :mod:`settings.limits`) and, for ``auth=xoauth2``, the
OAuth2 token source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Literal
from urllib.parse import parse_qsl, unquote

from pydantic import SecretStr

from mailworker.settings.errors import SettingsError
from mailworker.settings.limits import AccountLimits, pop_limits
from mailworker.settings.urls import PERCENT_ENCODE, port_of, scheme_of, split_url

Security = Literal["starttls", "tls", "none"]

_SCHEMES: dict[str, tuple[Security, int]] = {
    "smtp+starttls": ("starttls", 587),
    "smtps": ("tls", 465),
    "smtp": ("none", 25),
}


@dataclass(frozen=True)
class PoolOptions:
    """How one worker process keeps connections to one account.

    Defaults suit the big providers: a few connections, recycled before the provider does it
    for us, and a NOOP probe after 5 s idle because some servers drop sessions after ~10 s.
    """

    max_connections: int = 4
    max_messages: int = 100
    max_age: float = 300.0
    idle_check: float = 5.0
    acquire_timeout: float = 60.0


@dataclass(frozen=True)
class SmtpAccount:
    """One SMTP submission account. Its ``repr`` never shows the password."""

    name: str
    host: str
    port: int
    security: Security
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    auth: Literal["password", "xoauth2"] = "password"
    token_url: str | None = None
    client_id: str | None = None
    scope: str | None = None
    pipelining: bool = True  # RFC 2920, where the server offers it; off for a broken server
    chunking: bool = True  # RFC 3030 BDAT, where the server offers it (with PIPELINING)
    # Certificate and host name checks; off only by an explicit tls_verify=off, which the
    # worker logs as a WARNING on every connection (worker/tls.py).
    tls_verify: bool = True
    # token_url may be plain http only with an explicit insecure_token_url=on (a local test
    # endpoint); the worker logs a WARNING on every token request (worker/oauth.py).
    insecure_token_url: bool = False
    pool: PoolOptions = field(default_factory=PoolOptions)
    limits: AccountLimits = field(default_factory=AccountLimits)
    # fallback=backup[,other]: accounts that take a job this one cannot (worker.routes);
    # route=roundrobin spreads jobs over this account and its fallbacks in turn.
    fallbacks: tuple[str, ...] = ()
    round_robin: bool = False

    @property
    def variable(self) -> str:
        """The environment variable this account was read from."""
        return "SMTP_URL" if self.name == "default" else f"SMTP_URL_{self.name.upper()}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def account_name(variable: str) -> str:
    """``SMTP_URL`` → ``default``; ``SMTP_URL_BULK`` → ``bulk``."""
    if variable == "SMTP_URL":
        return "default"
    return variable.removeprefix("SMTP_URL_").lower()


def parse_smtp_url(variable: str, url: str) -> SmtpAccount:
    """Parse one account URL; every problem raises :class:`SettingsError` naming ``variable``."""
    url = url.strip()
    parts = split_url(variable, url)
    if parts.scheme not in _SCHEMES:
        raise SettingsError(
            variable,
            f"unsupported scheme {scheme_of(url)!r}; use smtp+starttls://user:pass@host:587, "
            "smtps://user:pass@host:465 or smtp://host:25 (a local relay without AUTH)",
        )
    security, default_port = _SCHEMES[parts.scheme]
    if not parts.hostname:
        raise SettingsError(variable, f"the URL has no host; if it has one, {PERCENT_ENCODE}")
    port = port_of(variable, parts, default_port)

    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    auth = options.pop("auth", "password")
    if auth not in ("password", "xoauth2"):
        raise SettingsError(variable, f"auth={auth!r}: use auth=password or auth=xoauth2")
    if (username or password) and security == "none":
        raise SettingsError(
            variable,
            "credentials on a plaintext smtp:// URL are refused (AUTH would travel in clear); "
            "use smtp+starttls:// (port 587) or smtps:// (port 465)",
        )
    pipelining = _switch(variable, options, "pipelining")
    chunking = _switch(variable, options, "chunking")
    tls_verify = _switch(variable, options, "tls_verify")
    token_url = options.pop("token_url", None)
    insecure_token_url = _switch(variable, options, "insecure_token_url", default="off")
    _check_token_url(variable, token_url, insecure_token_url)
    if not tls_verify and security == "none":
        raise SettingsError(variable, "tls_verify=off on an smtp:// URL: there is no TLS to verify")
    if auth == "xoauth2" and not username:
        raise SettingsError(variable, "auth=xoauth2 needs a user name (the mailbox) in the URL")
    fallbacks = _fallbacks(variable, options)
    round_robin = _route(variable, options, fallbacks)

    return SmtpAccount(
        name=account_name(variable),
        host=parts.hostname,
        port=port,
        security=security,
        username=username,
        password=SecretStr(password) if password is not None else None,
        auth=auth,  # type: ignore[arg-type]
        token_url=token_url,
        insecure_token_url=insecure_token_url,
        client_id=options.pop("client_id", None),
        scope=options.pop("scope", None),
        pipelining=pipelining,
        chunking=chunking,
        tls_verify=tls_verify,
        limits=pop_limits(variable, options),
        pool=_pool_options(variable, options),
        fallbacks=fallbacks,
        round_robin=round_robin,
    )


_NAME = re.compile(r"[a-z][a-z0-9_.]{0,39}")
_SWITCH = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False}
_OTHERS = [
    "auth",
    "chunking",
    "client_id",
    "cluster_connections",
    "fallback",
    "insecure_token_url",
    "pipelining",
    "rate",
    "rate.<domain>",
    "route",
    "scope",
    "tls_verify",
    "token_url",
]


def _fallbacks(variable: str, options: dict[str, str]) -> tuple[str, ...]:
    names = tuple(n.strip().lower() for n in options.pop("fallback", "").split(",") if n.strip())
    for name in names:
        if not _NAME.fullmatch(name):
            raise SettingsError(
                variable, f"fallback={name!r}: name an account (fallback=backup: SMTP_URL_BACKUP)"
            )
    if len(set(names)) != len(names):
        raise SettingsError(variable, "fallback= names an account twice")
    return names


def _route(variable: str, options: dict[str, str], fallbacks: tuple[str, ...]) -> bool:
    route = options.pop("route", "failover")
    if route not in ("failover", "roundrobin"):
        raise SettingsError(variable, f"route={route!r}: use route=failover or route=roundrobin")
    if route == "roundrobin" and not fallbacks:
        raise SettingsError(
            variable, "route=roundrobin spreads over the fallback= accounts: name them"
        )
    return route == "roundrobin"


def _check_token_url(variable: str, token_url: str | None, insecure: bool) -> None:
    """The client secret is posted to ``token_url``: https only, unless explicitly not."""
    scheme = (token_url or "").partition("://")[0].lower()
    if token_url is not None and scheme == "http" and not insecure:
        raise SettingsError(
            variable,
            "token_url must be an https:// URL: the client secret is posted to it; for a "
            "local test endpoint only, add insecure_token_url=on",
        )
    if token_url is not None and scheme not in ("https", "http"):
        raise SettingsError(variable, "token_url must be an https:// URL")
    if insecure and scheme != "http":
        raise SettingsError(
            variable, "insecure_token_url=on is only for a token_url=http://...; remove it"
        )


def _switch(variable: str, options: dict[str, str], name: str, default: str = "on") -> bool:
    """Pop an on/off query parameter."""
    value = options.pop(name, default).lower()
    if value not in _SWITCH:
        raise SettingsError(variable, f"{name}={value!r}: use {name}=on or off")
    return _SWITCH[value]


def _pool_options(variable: str, options: dict[str, str]) -> PoolOptions:
    known = {f.name: f.type for f in fields(PoolOptions)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        # Only what looks like a parameter name is repeated: anything else may be a piece
        # of a password (one with an unencoded '?' in it).
        shown = [name for name in unknown if _NAME.fullmatch(name)] or "(not shown)"
        raise SettingsError(
            variable, f"unknown query parameter(s) {shown}; known: {sorted(known) + _OTHERS}"
        )
    values: dict[str, float | int] = {}
    for name, raw in options.items():
        cast = int if known[name] in (int, "int") else float
        try:
            value = cast(raw)
        except ValueError:
            raise SettingsError(variable, f"{name}={raw!r} is not a number") from None
        if value <= 0:
            raise SettingsError(variable, f"{name}={raw!r} must be positive")
        values[name] = value
    return PoolOptions(**values)  # type: ignore[arg-type]
