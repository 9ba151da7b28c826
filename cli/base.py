"""What every command shares: the ``main`` group, consoles, exit codes and settings."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
from rich.console import Console

from mailworker.settings import SettingsError, get_settings

console = Console()
errors = Console(stderr=True)

# Exit codes mean something to scripts: 1 = the thing checked is broken, 2 = usage or config.
EXIT_FAILED = 1
EXIT_CONFIG = 2


def fail(message: str, code: int = EXIT_CONFIG) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)


class _Group(click.Group):
    """Turns "Redis is not there" into one line of advice instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        import redis

        try:
            return super().invoke(ctx)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            fail(
                f"Redis at REDIS_URL did not answer ({exc}); check that it is running and "
                "that REDIS_URL points at it",
                EXIT_FAILED,
            )


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """mailworker: queue email in Redis, deliver it with Celery over pooled TLS SMTP.

    Configuration comes from the environment (REDIS_URL, SMTP_URL, SMTP_URL_<NAME>, ...);
    see docs/configuration.md. Start a worker with:
    celery -A mailworker.worker worker -Q email.high,email
    """


def current_settings() -> Any:
    try:
        return get_settings()
    except SettingsError as exc:
        fail(str(exc))


def when(timestamp: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(timestamp).isoformat(timespec="seconds")


def moment(timestamp: float, now: float | None = None) -> str:
    """``2026-12-02 14:07:08 UTC, 3 s ago`` (or ``in 5 min``): a time a reader can place."""
    import datetime
    import time

    at = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    delta = (time.time() if now is None else now) - timestamp
    seconds = abs(delta)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 1.5 * size:
            span = f"{seconds / size:.0f} {unit}"
            break
    else:
        span = f"{seconds:.0f} s"
    return f"{at:%Y-%m-%d %H:%M:%S} UTC, " + (f"{span} ago" if delta >= 0 else f"in {span}")


def shown_value(key: str, value: Any) -> str:
    """A record's value for a table: times (``*_at``, ``*_until``) as :func:`moment`."""
    if key.endswith(("_at", "_until")):
        try:
            return moment(float(value))
        except (TypeError, ValueError, OverflowError, OSError):
            pass
    return json.dumps(value) if isinstance(value, dict) else str(value)
