"""mailworker's configuration: environment variables in, one frozen :class:`Settings` out.

The variable names are a public contract (see docs/configuration.md). Code asks
:func:`get_settings` for the process-wide value; it is read on first use, not at import,
so a producer that never sends never needs SMTP settings. The ground floor: imports no
other part of mailworker (only the error root, :mod:`mailworker.errors`).
"""

from __future__ import annotations

import functools

from mailworker.settings.errors import SettingsError
from mailworker.settings.limits import AccountLimits, Rate
from mailworker.settings.model import (
    DEFAULT_REDIS_URL,
    LimiterPolicy,
    RetryPolicy,
    Settings,
    load_settings,
)
from mailworker.settings.smtp_url import PoolOptions, SmtpAccount, parse_smtp_url

__all__ = [
    "DEFAULT_REDIS_URL",
    "AccountLimits",
    "LimiterPolicy",
    "Rate",
    "PoolOptions",
    "RetryPolicy",
    "Settings",
    "SettingsError",
    "SmtpAccount",
    "get_settings",
    "load_settings",
    "parse_smtp_url",
    "reload_settings",
]


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read from ``os.environ`` once."""
    return load_settings()


def reload_settings() -> Settings:
    """Forget the cached settings and read the environment again (tests, the dev CLI)."""
    get_settings.cache_clear()
    return get_settings()
