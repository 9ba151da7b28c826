"""The events outbox: recipient outcomes waiting to be handed to the app's task.

    mailworker:events   STREAM  one entry per outcome; deleted once published (worker.events)

An event is written by the same atomic step that decides the outcome (a settle, a feedback
report), so no outcome is lost between deciding and telling; the relay publishes it to
``EVENTS_TASK`` and only then deletes it, so a relay killed in between publishes it again:
at least once, with a stable ``id`` the app deduplicates on. Nothing is written unless
``EVENTS_TASK`` is set. The stream is capped (``MAX_EVENTS``, oldest first) so an app that
never consumes cannot fill Redis.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import redis

from mailworker.store import keys
from mailworker.store.client import get_redis

EVENTS = keys.EVENTS
GROUP = "relay"
MAX_EVENTS = 1_000_000
EventType = Literal[
    "queued", "sent", "deferred", "bounced", "complained", "unsubscribed", "failed", "expired"
]

# Lua: XADD each event of a JSON array (field maps) to KEYS[k], capped.
EMIT = f"""
local function emit(stream, encoded)
  if encoded == '' then return end
  for _, event in ipairs(cjson.decode(encoded)) do
    local flat = {{}}
    for k, v in pairs(event) do table.insert(flat, k); table.insert(flat, tostring(v)) end
    redis.call('XADD', stream, 'MAXLEN', '~', {MAX_EVENTS}, '*', unpack(flat))
  end
end
"""


@dataclass(frozen=True)
class Event:
    """One recipient outcome, as the app's task receives it (a dict of these fields)."""

    type: EventType
    job_id: str
    recipient: str
    account: str = ""
    campaign: str = ""
    code: str = ""  # the SMTP reply code or the DSN status (5.1.1)
    detail: str = ""  # the server's words, the bounce type; never message content
    tags: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    attempt: int = 0  # for deferred: which attempt

    @property
    def id(self) -> str:
        """Stable across re-deliveries: the app keeps the ids it has seen."""
        suffix = f"/{self.attempt}" if self.type == "deferred" else ""
        return f"{self.job_id}/{self.recipient}/{self.type}{suffix}"

    def fields(self) -> dict[str, str]:
        values = {k: v for k, v in asdict(self).items() if k != "attempt"}
        values["tags"] = json.dumps(self.tags, sort_keys=True)
        values["at"] = f"{self.at:.3f}"
        return {"id": self.id, **{k: str(v) for k, v in values.items()}}


def encode(events: list[Event]) -> str:
    """ARGV for :data:`EMIT` (``''`` for none)."""
    return json.dumps([e.fields() for e in events]) if events else ""


def decode(fields: dict[str, Any]) -> dict[str, Any]:
    """An outbox entry as the app's task receives it."""
    event: dict[str, Any] = dict(fields)
    event["tags"] = json.loads(event.get("tags") or "{}")
    event["at"] = float(event.get("at") or 0)
    return event


def ensure_group(*, client: redis.Redis | None = None) -> None:
    """The relays' consumer group, from the stream's start (MKSTREAM: nothing to trim yet)."""
    try:
        (client or get_redis()).xgroup_create(EVENTS, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def take(
    consumer: str, limit: int, reclaim_after: float, *, client: redis.Redis | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Events for ``consumer`` to publish: its own unacknowledged ones (a publish failed),
    those another relay took ``reclaim_after`` seconds ago and never acknowledged (it
    died), then new ones. Each stays in the stream until :func:`done`."""
    r = client or get_redis()
    mine: Any = r.xreadgroup(GROUP, consumer, {EVENTS: "0"}, count=limit)
    found = list(mine[0][1]) if mine else []
    if len(found) < limit:
        claimed = r.xautoclaim(EVENTS, GROUP, consumer, int(reclaim_after * 1000), "0-0",
                               count=limit - len(found))  # fmt: skip
        found += [entry for entry in claimed[1] if entry[1]]
    if len(found) < limit:
        new: Any = r.xreadgroup(GROUP, consumer, {EVENTS: ">"}, count=limit - len(found))
        found += list(new[0][1]) if new else []
    return [(str(entry_id), decode(fields)) for entry_id, fields in found if fields]


def done(entry_ids: list[str], *, client: redis.Redis | None = None) -> None:
    """Published: acknowledge and delete (the stream keeps only what is still owed)."""
    if entry_ids:
        pipe = (client or get_redis()).pipeline(transaction=True)
        pipe.xack(EVENTS, GROUP, *entry_ids)
        pipe.xdel(EVENTS, *entry_ids)
        pipe.execute()
