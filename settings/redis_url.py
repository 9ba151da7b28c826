"""Redis Sentinel URLs in Celery's syntax: one ``sentinel://`` per sentinel, then the master.

sentinel://:redis-password@10.0.0.1:26379;sentinel://10.0.0.2:26379/0?master_name=mymaster
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

from mailworker.settings.urls import port_of, split_url


@dataclass(frozen=True)
class SentinelUrl:
    """The parts of a ``sentinel://`` URL; its ``repr`` shows neither the password nor
    the URL that holds it."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int
    password: str | None = field(repr=False)
    # The URL without master_name, as Celery's broker expects it.
    broker_url: str = field(repr=False)


def sentinel_parts(url: str) -> SentinelUrl:
    """Split a ``sentinel://`` URL; ``ValueError`` says what is wrong, never with a part of
    the URL (it may hold the password)."""
    parts = [split_url("REDIS_URL", part) for part in url.split(";")]
    query = parse_qs(parts[-1].query)
    master = (query.get("master_name") or [""])[0]
    if not master:
        raise ValueError("a sentinel:// REDIS_URL needs ?master_name=<the monitored master>")
    path = (parts[-1].path or "/0").strip("/") or "0"
    if not path.isdigit():
        raise ValueError("the database number after the last sentinel is not a number (e.g. /0)")
    return SentinelUrl(
        sentinels=tuple((p.hostname or "127.0.0.1", port_of("REDIS_URL", p, 26379)) for p in parts),
        master_name=master,
        db=int(path),
        password=unquote(parts[0].password) if parts[0].password else None,
        broker_url=url.split("?")[0],
    )
