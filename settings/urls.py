"""What two URL settings (SMTP_URL, REDIS_URL) share: parts read without echoing a secret.

A password with an unencoded ``/``, ``?`` or ``#`` ends the URL's authority early: what
follows is read as a path, a query or a fragment and what came before as ``host:port``, so
``urllib`` reports "Port could not be cast to integer value as '<half the password>'".
Errors here name the variable and what to do, never a part of the value.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from mailworker.settings.errors import SettingsError

PERCENT_ENCODE = (
    "percent-encode the user name and password (/ as %2F, ? as %3F, # as %23, @ as %40, "
    ": as %3A; urllib.parse.quote(password, safe='') does it)"
)


def split_url(variable: str, url: str) -> SplitResult:
    """``urlsplit`` that refuses a password spilling out of the authority."""
    parts = urlsplit(url)
    rest = url.partition("://")[2]
    at, equals = rest.find("@"), rest.find("=")
    if "@" not in parts.netloc and at >= 0 and (equals < 0 or at < equals):
        raise SettingsError(
            variable,
            "the user name or password holds an unencoded '/', '?' or '#', so the URL "
            f"cannot be read; {PERCENT_ENCODE}",
        )
    return parts


def port_of(variable: str, parts: SplitResult, default: int) -> int:
    try:
        return parts.port or default
    except ValueError:
        raise SettingsError(
            variable,
            f"the port is not a number from 0 to 65535; if it is, {PERCENT_ENCODE}",
        ) from None


def scheme_of(url: str) -> str:
    """The scheme as written, for error messages: empty unless ``://`` follows it (in
    ``user:pass@host`` what urllib calls the scheme is the user name)."""
    scheme, sep, _ = url.partition("://")
    return scheme if sep and scheme.replace("+", "").replace("-", "").isalnum() else ""
