"""Cluster-wide sending limits of one account, as written in its ``SMTP_URL`` query.

    rate=14/s,50000/d           every window must allow a send (counted per message)
    rate.gmail.com=20/s         an extra limit for messages to one recipient domain
    cluster_connections=3       concurrent SMTP sessions across every worker process

A window is ``N/s``, ``N/m``, ``N/h`` or ``N/d``; several are separated by commas. Each is a
sliding window: never more than N sends in any interval of that length, cluster-wide.
Per-second and per-minute windows are rates: sends are also spread evenly (bursts of at
most ceil(N/10)) and throttling replies lower them for a while. Hours and days are quotas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailworker.settings.errors import SettingsError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WINDOW = re.compile(r"^\s*(\d+)\s*/\s*([smhd])\s*$")
# Windows this short are rates (paced, lowered by throttling); longer ones are quotas.
ADAPTIVE_UP_TO_SECONDS = 60


@dataclass(frozen=True)
class Rate:
    """At most ``limit`` sends in any ``seconds``-long interval."""

    limit: int
    seconds: int

    @property
    def adaptive(self) -> bool:
        return self.seconds <= ADAPTIVE_UP_TO_SECONDS

    def __str__(self) -> str:
        unit = next(u for u, s in _UNITS.items() if s == self.seconds)
        return f"{self.limit}/{unit}"


@dataclass(frozen=True)
class AccountLimits:
    rates: tuple[Rate, ...] = ()
    domain_rates: tuple[tuple[str, tuple[Rate, ...]], ...] = ()
    cluster_connections: int | None = None

    @property
    def limits_rate(self) -> bool:
        return bool(self.rates or self.domain_rates)

    def for_domain(self, domain: str) -> tuple[Rate, ...]:
        return dict(self.domain_rates).get(domain.lower(), ())


def parse_rates(variable: str, parameter: str, text: str) -> tuple[Rate, ...]:
    """``"20/s,2000/d"`` → two :class:`Rate`; errors name the variable and the parameter."""
    rates: list[Rate] = []
    for part in text.split(","):
        match = _WINDOW.match(part)
        if match is None:
            raise SettingsError(
                variable,
                f"{parameter}={text!r}: write windows as N/s, N/m, N/h or N/d, "
                "separated by commas (e.g. rate=14/s,50000/d)",
            )
        limit, seconds = int(match.group(1)), _UNITS[match.group(2)]
        if limit < 1:
            raise SettingsError(variable, f"{parameter}={text!r}: a limit must be at least 1")
        if any(rate.seconds == seconds for rate in rates):
            raise SettingsError(variable, f"{parameter}={text!r}: one limit per unit")
        rates.append(Rate(limit, seconds))
    return tuple(sorted(rates, key=lambda rate: rate.seconds))


def pop_limits(variable: str, options: dict[str, str]) -> AccountLimits:
    """Take the limit parameters out of ``options`` (what is left configures the pool)."""
    rates = parse_rates(variable, "rate", options.pop("rate")) if "rate" in options else ()
    domains = []
    for name in sorted(key for key in options if key.startswith("rate.")):
        domain = name.removeprefix("rate.").lower()
        if not domain or "." not in domain:
            raise SettingsError(variable, f"{name}: write rate.<domain>, e.g. rate.gmail.com=20/s")
        domains.append((domain, parse_rates(variable, name, options.pop(name))))
    connections = None
    if "cluster_connections" in options:
        raw = options.pop("cluster_connections")
        if not raw.isdigit() or int(raw) < 1:
            raise SettingsError(variable, f"cluster_connections={raw!r}: use a whole number >= 1")
        connections = int(raw)
    return AccountLimits(rates, tuple(domains), connections)
