"""The suppression list: addresses that get no more mail, and why.

    mailworker:suppressed   HASH  address -> reason; the address in one form
                                  (:func:`mailworker.store.addresses.normalize_address`)

Written by a hard bounce (worker), an unsubscribe (producer) and operators (the CLI);
only an operator removes an entry (``mailworker suppress remove``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import redis

from mailworker.store import keys
from mailworker.store.addresses import normalize_address
from mailworker.store.client import get_redis, texts

SUPPRESSED = keys.SUPPRESSED
_BATCH = 1000


def suppress(address: str, reason: str, *, client: redis.Redis | None = None) -> None:
    (client or get_redis()).hset(SUPPRESSED, normalize_address(address), reason)


def suppressed(addresses: tuple[str, ...], *, client: redis.Redis | None = None) -> set[str]:
    """The subset of ``addresses`` on the suppression list."""
    if not addresses:
        return set()
    keys = [normalize_address(a) for a in addresses]
    reasons = (client or get_redis()).hmget(SUPPRESSED, keys)
    return {a for a, why in zip(addresses, reasons, strict=True) if why is not None}


def unsuppress(addresses: list[str], *, client: redis.Redis | None = None) -> int:
    """Take ``addresses`` off the suppression list; return how many were on it."""
    if not addresses:
        return 0
    keys = [normalize_address(a) for a in addresses]
    return int((client or get_redis()).hdel(SUPPRESSED, *keys))


def suppression_list(*, client: redis.Redis | None = None) -> Iterator[tuple[str, str]]:
    """Every suppressed address and why, streamed (HSCAN), for exports of any size."""
    yield from (client or get_redis()).hscan_iter(SUPPRESSED, count=1000)


def reasons(addresses: Iterable[str], *, client: redis.Redis | None = None) -> list[str | None]:
    """Why each of ``addresses`` is suppressed, or ``None`` where it is not."""
    wanted = [normalize_address(a) for a in addresses]
    return texts((client or get_redis()).hmget(SUPPRESSED, wanted)) if wanted else []


def stage_reasons(pipe: redis.client.Pipeline, addresses: Iterable[str]) -> None:
    """:func:`reasons` as one command of the caller's pipeline (a worker's preflight)."""
    pipe.hmget(SUPPRESSED, [normalize_address(a) for a in addresses])


def suppress_many(entries: Iterable[tuple[str, str]], *, client: redis.Redis | None = None) -> int:
    """Suppress ``(address, reason)`` pairs in pipelined batches; how many were written."""
    pipe, count = (client or get_redis()).pipeline(transaction=False), 0
    for address, reason in entries:
        pipe.hset(SUPPRESSED, normalize_address(address), reason)
        count += 1
        if count % _BATCH == 0:
            pipe.execute()
    pipe.execute()
    return count
