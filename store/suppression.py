"""The suppression list: addresses that get no more mail, in which scope, and why.

    mailworker:suppressed              HASH  address -> entry   blocks all mail
    mailworker:suppressed:bulk         HASH  address -> entry   blocks every campaign
    mailworker:suppressed:list:<id>    HASH  address -> entry   blocks one list's campaigns

The address is in one form (:func:`mailworker.store.addresses.normalize_address`); the entry
is JSON: its type (``hard-bounce``, ``soft-bounce``, ``complaint``, ``unsubscribe``,
``manual``), source (``smtp``, ``dsn``, ``arf``, ``ses``, ``link``, ``operator``), reason,
status code, time and expiry. Transactional mail is blocked only by the first scope (hard
bounces and what an operator adds), so a newsletter's unsubscribe never stops a password
reset. An expired entry blocks nothing; the reaper deletes it (:func:`prune_expired`).
Entries without expiry stay until an operator removes them (``mailworker suppress remove``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import redis

from mailworker.store import keys
from mailworker.store.addresses import normalize_address
from mailworker.store.client import get_redis

SUPPRESSED = keys.SUPPRESSED
SUPPRESSED_BULK = keys.SUPPRESSED_BULK
EntryType = Literal["hard-bounce", "soft-bounce", "complaint", "unsubscribe", "manual"]
_BATCH = 1000


@dataclass(frozen=True)
class Entry:
    """Why one address is suppressed in one scope (``all``, ``bulk`` or ``list:<id>``)."""

    type: EntryType = "manual"
    source: str = "operator"
    reason: str = ""
    status: str = ""  # the SMTP or DSN status code, if any
    at: float = 0.0
    expires_at: float | None = None
    scope: str = "all"

    def active(self, now: float | None = None) -> bool:
        return self.expires_at is None or self.expires_at > (now or time.time())

    def describe(self) -> str:
        """One line for people: ``hard-bounce 5.1.1 (dsn): user unknown``."""
        head = " ".join(part for part in (self.type, self.status) if part)
        where = "" if self.scope == "all" else f", {self.scope}"
        return f"{head} ({self.source}{where})" + (f": {self.reason}" if self.reason else "")

    def encode(self) -> str:
        fields = asdict(self)
        fields.pop("scope")  # the key says it
        return json.dumps({k: v for k, v in fields.items() if v not in ("", None)})

    @classmethod
    def decode(cls, raw: str, scope: str = "all") -> Entry:
        if raw.startswith("{"):
            return cls(**json.loads(raw), scope=scope)
        # Written by mailworker 0.1: a reason only.
        legacy: EntryType = "hard-bounce" if raw.startswith("hard bounce") else "manual"
        if raw.startswith("unsubscribed"):
            legacy = "unsubscribe"
        return cls(type=legacy, source="0.1", reason=raw, scope=scope)


def scope_key(scope: str) -> str:
    if scope == "all":
        return SUPPRESSED
    if scope == "bulk":
        return SUPPRESSED_BULK
    if scope.startswith("list:") and len(scope) > 5:
        return keys.suppressed_list(scope[5:])
    raise ValueError(f"suppression scope {scope!r}: use all, bulk or list:<list id>")


def suppress(
    address: str,
    reason: str = "",
    *,
    kind: EntryType = "manual",
    source: str = "operator",
    status: str = "",
    scope: str = "all",
    expires_at: float | None = None,
    client: redis.Redis | None = None,
) -> Entry:
    # The worker's claim reads the `all` scope in Lua, where an entry is there or not.
    if scope == "all" and expires_at is not None:
        raise ValueError("entries that block all mail do not expire; use scope bulk")
    entry = Entry(kind, source, reason, status, time.time(), expires_at, scope)
    (client or get_redis()).hset(scope_key(scope), normalize_address(address), entry.encode())
    return entry


def stage_suppress(pipe: redis.client.Pipeline, address: str, entry: Entry) -> None:
    pipe.hset(scope_key(entry.scope), normalize_address(address), entry.encode())


def suppressed(addresses: tuple[str, ...], *, client: redis.Redis | None = None) -> set[str]:
    """The subset of ``addresses`` blocked for all mail (the transactional check)."""
    found = entries(addresses, client=client)
    return {a for a, entry in zip(addresses, found, strict=True) if entry is not None}


def entries(
    addresses: Iterable[str], scope: str = "all", *, client: redis.Redis | None = None
) -> list[Entry | None]:
    """Each address's active entry in ``scope``, or ``None``."""
    wanted = [normalize_address(a) for a in addresses]
    if not wanted:
        return []
    raw = (client or get_redis()).hmget(scope_key(scope), wanted)
    return [_active(value, scope, time.time()) for value in raw]


def unsuppress(
    addresses: list[str], scope: str = "all", *, client: redis.Redis | None = None
) -> int:
    """Take ``addresses`` off one scope's list; return how many were on it."""
    if not addresses:
        return 0
    wanted = [normalize_address(a) for a in addresses]
    return int((client or get_redis()).hdel(scope_key(scope), *wanted))


def suppression_list(
    scope: str = "all", *, client: redis.Redis | None = None
) -> Iterator[tuple[str, Entry]]:
    """Every suppressed address of ``scope`` and its entry, streamed (HSCAN)."""
    for address, raw in (client or get_redis()).hscan_iter(scope_key(scope), count=1000):
        yield str(address), Entry.decode(str(raw), scope)


def scopes(*, client: redis.Redis | None = None) -> list[str]:
    """Every scope with entries: ``all``, ``bulk`` and the lists'."""
    r = client or get_redis()
    lists = sorted(str(k) for k in r.scan_iter(match=keys.suppressed_list("*"), count=1000))
    return ["all", "bulk"] + [f"list:{k.removeprefix(keys.suppressed_list(''))}" for k in lists]


def stage_campaign_check(
    pipe: redis.client.Pipeline, addresses: Sequence[str], list_id: str | None
) -> None:
    """Stage the three lookups a campaign recipient passes: all, bulk and its list."""
    wanted = [normalize_address(a) for a in addresses]
    for scope in ("all", "bulk", *((f"list:{list_id}",) if list_id else ())):
        pipe.hmget(scope_key(scope), wanted)


def campaign_blocked(replies: Sequence[Sequence[Any]]) -> list[str | None]:
    """What :func:`stage_campaign_check` found: each address's blocking entry, described."""
    now, found = time.time(), []
    for values in zip(*replies, strict=True):
        active = [e for e in (_active(v, "", now) for v in values) if e is not None]
        found.append(active[0].describe() if active else None)
    return found


def suppress_many(
    entries: Iterable[tuple[str, str]],
    *,
    source: str = "operator",
    client: redis.Redis | None = None,
) -> int:
    """Suppress ``(address, reason)`` pairs for all mail in pipelined batches; how many."""
    pipe, count, now = (client or get_redis()).pipeline(transaction=False), 0, time.time()
    for address, reason in entries:
        stage_suppress(pipe, address, Entry("manual", source, reason, at=now))
        count += 1
        if count % _BATCH == 0:
            pipe.execute()
    pipe.execute()
    return count


def prune_expired(scope: str = "bulk", *, client: redis.Redis | None = None) -> int:
    """Delete the entries of ``scope`` whose expiry has passed; how many (the reaper's)."""
    r, now, gone = client or get_redis(), time.time(), []
    for address, entry in suppression_list(scope, client=r):
        if not entry.active(now):
            gone.append(address)
    return int(r.hdel(scope_key(scope), *gone)) if gone else 0


def _active(raw: Any, scope: str, now: float) -> Entry | None:
    if raw is None:
        return None
    entry = Entry.decode(str(raw), scope)
    return entry if entry.active(now) else None
