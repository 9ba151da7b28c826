"""A campaign batch's bookkeeping while it runs, and the campaign-state check per message."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from mailworker.store import keys
from mailworker.store.events import Event, EventType, encode

Recipient = list[Any]  # [index, address, variables]

# How old the campaign's state may be when a message asks it: pause and cancel stop every
# running batch within about this long (plus the sessions already in a transaction).
STATE_MAX_AGE = 0.25


@dataclass
class BatchOutcome:
    suppressed: int = 0
    duplicate: int = 0  # another batch owns the address (a re-run with re-sorted rows)
    failed: dict[int, str] = field(default_factory=dict)
    retry: list[Recipient] = field(default_factory=list)  # spends an attempt
    wait: list[Recipient] = field(default_factory=list)  # rate limit, pause: does not
    wait_until: float = 0.0
    held: bool = False  # the wait is an account pause (`mailworker resume` ends it)
    retry_hint: float | None = None
    parked: list[Recipient] = field(default_factory=list)  # the campaign was paused
    cancelled: list[Recipient] = field(default_factory=list)  # the campaign was cancelled
    failing: tuple[str, int | None] | None = None  # a transient failure of the account

    def failure_events(self, campaign: str, account: str, recipients: list[Recipient]) -> str:
        """The ``bounced`` / ``failed`` events of this batch's failed recipients (encoded
        for the settle step); each names its message as its Message-ID does."""
        addresses = {index: address for index, address, *_ in recipients}
        events = []
        for index, why in self.failed.items():
            kind: EventType = "bounced" if why.startswith("bounced") else "failed"
            reason = why.partition(": ")[2]
            code = reason.split(" ", 1)[0] if reason[:1].isdigit() else ""
            events.append(Event(kind, f"{campaign}-{index}", addresses.get(index, ""), account,
                                campaign, code=code, detail=why[:200]))  # fmt: skip
        return encode(events)


class StopCheck:
    """Asked before each message: ``None`` while the campaign runs, else ``paused`` or
    ``cancelled``. One read of the campaign's state serves every message for 250 ms."""

    def __init__(self, campaign: str, client: Callable[[], redis.asyncio.Redis]) -> None:
        self._key = keys.campaign(campaign, "meta")
        self._client = client
        self._state = "running"
        self._read_at = float("-inf")

    async def __call__(self) -> str | None:
        if time.monotonic() - self._read_at > STATE_MAX_AGE:
            found = await self._client().hget(self._key, "state")
            self._state = "cancelled" if found is None else str(found)  # deleted: stop
            self._read_at = time.monotonic()
        return None if self._state == "running" else self._state
