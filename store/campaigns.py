"""A campaign's state in Redis: its template and state, its counters, which batches are
queued, which recipients were sent, and why the others were not.

    mailworker:{campaign:<id>}:meta     HASH  template, digest, account, state, total, ...
    mailworker:{campaign:<id>}:counts   HASH  queued, sent, failed, suppressed, invalid, ...
    mailworker:{campaign:<id>}:batches  BITS  batch k queued
    mailworker:{campaign:<id>}:sent     BITS  recipient n accepted by the server
    mailworker:{campaign:<id>}:errors   HASH  recipient n -> why it was not sent

The producer (:mod:`mailworker.tasks.campaign`) creates a campaign and queues its batches;
the bulk worker (:mod:`mailworker.worker.campaign_runner`) marks recipients and counts.
Every write gives all five keys CAMPAIGN_RETENTION again, so a campaign's data ends that
long after its last activity, all at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import redis
import redis.asyncio

from mailworker.settings import get_settings
from mailworker.store import keys
from mailworker.store.client import Fields, get_redis, lua, text_map

STATES = ("running", "paused", "cancelled")
# Counters per campaign: recipients by where they are now.
COUNTERS = ("queued", "sent", "failed", "suppressed", "invalid", "deferred", "cancelled")
_DONE = ("sent", "failed", "suppressed", "invalid", "cancelled")
_PARTS = ("meta", "counts", "batches", "sent", "errors")
# Lua: every key of the campaign (KEYS[k0..k0+4]) lives ``seconds`` more.
_KEEP = """
local function keep(k0, seconds)
  for i = k0, k0 + 4 do redis.call('EXPIRE', KEYS[i], seconds) end
end
"""

# Mark batch k queued and count it, once, however often the producer is re-run.
_MARK_QUEUED = (
    _KEEP
    + """
if redis.call('SETBIT', KEYS[1], ARGV[1], 1) == 1 then return 0 end
redis.call('HINCRBY', KEYS[2], 'queued', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBY', KEYS[2], 'invalid', ARGV[3]) end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
keep(4, ARGV[4])
return 1
"""
)
# The sent bit and the sent count move together, once, even if a batch runs again.
# (No TTL renewal here, on the per-message path: the batch's commit renews them all.)
_MARK_SENT = """
if redis.call('SETBIT', KEYS[1], ARGV[1], 1) == 0 then
  redis.call('HINCRBY', KEYS[2], 'sent', 1)
end
return 0
"""


def _client(client: redis.Redis | None) -> redis.Redis:
    return client or get_redis()


def _all_keys(campaign_id: str) -> list[str]:
    return [keys.campaign(campaign_id, part) for part in _PARTS]


def _retention() -> int:
    return max(1, math.ceil(get_settings().retention.campaigns))


def _stage_keep(pipe: redis.client.Pipeline, campaign_id: str) -> None:
    """Every key of the campaign lives CAMPAIGN_RETENTION more (in the caller's pipeline)."""
    for key in _all_keys(campaign_id):
        pipe.expire(key, _retention())


def _write(campaign_id: str, client: redis.Redis | None, key: str, mapping: Any) -> None:
    pipe = _client(client).pipeline(transaction=True)
    pipe.hset(key, mapping=cast(Fields, mapping))
    _stage_keep(pipe, campaign_id)
    pipe.execute()


def meta(campaign_id: str, *, client: redis.Redis | None = None) -> dict[str, str]:
    """The campaign's meta record (empty if there is no such campaign)."""
    return text_map(_client(client).hgetall(keys.campaign(campaign_id, "meta")))


def create(
    campaign_id: str, fields: Mapping[str, Any], *, client: redis.Redis | None = None
) -> None:
    _write(campaign_id, client, keys.campaign(campaign_id, "meta"), fields)


def set_total(campaign_id: str, total: int, *, client: redis.Redis | None = None) -> None:
    """Every batch is queued: ``total`` recipients in all."""
    mapping = {"total": total, "enqueued": 1}
    _write(campaign_id, client, keys.campaign(campaign_id, "meta"), mapping)


def set_state(campaign_id: str, state: str, *, client: redis.Redis | None = None) -> None:
    """``running``, ``paused`` or ``cancelled``; ``KeyError`` if there is no such campaign."""
    client = _client(client)
    key = keys.campaign(campaign_id, "meta")
    if not client.exists(key):
        raise KeyError(campaign_id)
    _write(campaign_id, client, key, {"state": state})


def batch_queued(campaign_id: str, number: int, *, client: redis.Redis | None = None) -> bool:
    return bool(_client(client).getbit(keys.campaign(campaign_id, "batches"), number))


def mark_batch_queued(
    campaign_id: str,
    number: int,
    queued: int,
    invalid: Mapping[int, str],
    *,
    client: redis.Redis | None = None,
) -> None:
    """Count batch ``number``'s recipients as queued and record its invalid rows, once."""
    errors = [item for index, why in invalid.items() for item in (index, why)]
    lua(_client(client), _MARK_QUEUED)(
        keys=[keys.campaign(campaign_id, part) for part in ("batches", "counts", "errors")]
        + _all_keys(campaign_id),
        args=[number, queued, len(invalid), _retention(), *errors],
    )


def status(campaign_id: str, *, client: redis.Redis | None = None) -> dict[str, Any] | None:
    """State, totals and counters, or ``None`` if there is no such campaign."""
    pipe = _client(client).pipeline(transaction=False)
    pipe.hgetall(keys.campaign(campaign_id, "meta"))
    pipe.hgetall(keys.campaign(campaign_id, "counts"))
    found, raw_counts = (text_map(reply) for reply in pipe.execute())
    if not found:
        return None
    counts = {name: int(raw_counts.get(name, 0)) for name in COUNTERS}
    return {
        "id": campaign_id,
        "state": found.get("state", "running"),
        "account": found.get("account"),
        "created_at": float(found.get("created_at", 0)),
        "enqueued": found.get("enqueued") == "1",
        "total": int(found["total"]) if "total" in found else None,
        "done": sum(counts[name] for name in _DONE),
        **counts,
    }


def errors(
    campaign_id: str, limit: int = 100, *, client: redis.Redis | None = None
) -> dict[int, str]:
    _, found = _client(client).hscan(keys.campaign(campaign_id, "errors"), count=limit)
    return {int(k): v for k, v in list(text_map(found).items())[:limit]}


def stage_sent_lookup(pipe: redis.client.Pipeline, campaign_id: str, indexes: list[int]) -> None:
    """One GETBIT per recipient index, in the caller's pipeline: sent already?"""
    for index in indexes:
        pipe.getbit(keys.campaign(campaign_id, "sent"), index)


async def mark_sent(client: redis.asyncio.Redis, campaign_id: str, index: int) -> None:
    """Recipient ``index`` got a 250: its bit and the sent count, once (on the worker's loop)."""
    bits = [keys.campaign(campaign_id, "sent"), keys.campaign(campaign_id, "counts")]
    await lua(client, _MARK_SENT)(keys=bits, args=[index])


def stage_counts(pipe: redis.client.Pipeline, campaign_id: str, **counts: int) -> None:
    """Add to the counters and renew every key's TTL: each batch commit ends with this."""
    for name, value in counts.items():
        if value:
            pipe.hincrby(keys.campaign(campaign_id, "counts"), name, value)
    _stage_keep(pipe, campaign_id)


def stage_errors(pipe: redis.client.Pipeline, campaign_id: str, failed: Mapping[int, str]) -> None:
    """Why each of these recipients was not sent (the commit's stage_counts renews TTLs)."""
    if failed:
        pipe.hset(keys.campaign(campaign_id, "errors"), mapping=cast(Fields, failed))


def waiting_batches(queue: str, *, client: redis.Redis | None = None) -> int:
    """Batches waiting in ``queue`` (kombu's list), for pacing the producer."""
    return int(_client(client).llen(keys.queue_key(queue)))
