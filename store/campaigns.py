"""A campaign's state in Redis: its template and state, its counters, which batches are
queued, which recipients were sent, and why the others were not.

    mailworker:{campaign:<id>}:meta     HASH  template, digest, account, state, total, ...
    mailworker:{campaign:<id>}:counts   HASH  queued, sent, failed, suppressed, invalid, ...
    mailworker:{campaign:<id>}:batch-ids   SET   batches queued (ids derive from content)
    mailworker:{campaign:<id>}:recipients  HASH  address -> its batch lineage, or ``sent``
    mailworker:{campaign:<id>}:errors   HASH  recipient n -> why it was not sent
    mailworker:{campaign:<id>}:parked   ZSET  batches parked while the campaign is paused
    mailworker:{campaign:<id>}:feedback HASH  address -> bounced | complained (store.feedback)

The producer (:mod:`mailworker.tasks.campaign`) creates a campaign and queues its batches;
the bulk worker (:mod:`mailworker.worker.campaign_runner`) marks recipients and counts.
Every write gives all seven keys CAMPAIGN_RETENTION again, so a campaign's data ends that
long after its last activity, all at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, cast

import redis
import redis.asyncio

from mailworker.settings import get_settings
from mailworker.store import keys
from mailworker.store.client import Fields, get_redis, lua, stage_script, text_map
from mailworker.store.events import EMIT

STATES = ("running", "paused", "cancelled")
# Counters per campaign: recipients by where they are now.
COUNTERS = (
    "queued",
    "sent",
    "failed",
    "suppressed",
    "invalid",
    "duplicate",
    "deferred",
    "cancelled",
    "bounced",  # after the 250: a DSN or provider event (feedback), among the sent
    "complained",
)
_DONE = ("sent", "failed", "suppressed", "invalid", "duplicate", "cancelled")
_PARTS = ("meta", "counts", "batch-ids", "recipients", "errors", "parked", "feedback")
# What a batch may do with each of its recipients (see claim_recipients).
GO, SENT, ELSEWHERE = 0, 1, 2
# Lua: every key of the campaign (KEYS[k0..], the last ones) lives ``seconds`` more.
_KEEP = """
local function keep(k0, seconds)
  for i = k0, #KEYS do redis.call('EXPIRE', KEYS[i], seconds) end
end
"""
# A paused campaign's parked batches become due now (the mover publishes them).
_RELEASE_PARKED = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[2], ARGV[1], id) end
redis.call('DEL', KEYS[1])
return #ids
"""

# Mark a batch queued and count it, once, however often the producer is re-run.
_MARK_QUEUED = (
    _KEEP
    + """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], 'queued', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBY', KEYS[2], 'invalid', ARGV[3]) end
if tonumber(ARGV[5]) > 0 then redis.call('HINCRBY', KEYS[2], 'duplicate', ARGV[5]) end
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
keep(4, ARGV[4])
return 1
"""
)
# Recipients are keyed by their normalised address, not by row: the first batch lineage
# (a batch and its retry children share the id before the first '.') to meet an address
# owns it; a re-run with re-sorted rows, or the same address twice, sends it once.
# KEYS: recipients. ARGV: lineage, address keys... Returns GO | SENT | ELSEWHERE each.
_CLAIM_RECIPIENTS = """
local out = {}
for i = 2, #ARGV do
  local owner = redis.call('HGET', KEYS[1], ARGV[i])
  if not owner then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1]); owner = ARGV[1]
  end
  if owner == 'sent' then out[i - 1] = 1 elseif owner == ARGV[1] then out[i - 1] = 0
  else out[i - 1] = 2 end
end
return out
"""
# The sent mark and the sent count move together, once, even if a batch runs again, with
# the account's hourly rates (store.feedback) and the recipient's `sent` event, if any.
# (No TTL renewal here, on the per-message path: the batch's commit renews them all.)
# KEYS: recipients, counts, rates, events. ARGV: address key, events (JSON or '').
_MARK_SENT = (
    EMIT
    + """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'sent' then
  redis.call('HSET', KEYS[1], ARGV[1], 'sent')
  redis.call('HINCRBY', KEYS[2], 'sent', 1)
  redis.call('HINCRBY', KEYS[3], 'sent', 1)
  redis.call('EXPIRE', KEYS[3], 90000)
  emit(KEYS[4], ARGV[2])
end
return 0
"""
)


def recipient_key(address: str) -> str:
    """A campaign recipient's stable key: the address, case-folded."""
    return address.casefold()


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


def state_of(campaign_id: str, *, client: redis.Redis | None = None) -> str | None:
    """``running``, ``paused`` or ``cancelled``; ``None`` if there is no such campaign."""
    found = _client(client).hget(keys.campaign(campaign_id, "meta"), "state")
    return None if found is None else str(found)


def list_of(campaign_id: str, *, client: redis.Redis | None = None) -> str | None:
    """The campaign's List-Id (its unsubscribes and complaints suppress for this list)."""
    found = _client(client).hget(keys.campaign(campaign_id, "meta"), "list_id")
    return None if found is None else str(found)


def keep(campaign_id: str, *, client: redis.Redis | None = None) -> None:
    """Every key of the campaign lives CAMPAIGN_RETENTION more (after a batch settles)."""
    pipe = _client(client).pipeline(transaction=False)
    _stage_keep(pipe, campaign_id)
    pipe.execute()


def release_parked(campaign_id: str, *, client: redis.Redis | None = None) -> int:
    """Make every parked batch due now (resume, cancel): how many there were."""
    return int(
        lua(_client(client), _RELEASE_PARKED)(
            keys=[keys.campaign(campaign_id, "parked"), keys.JOBS_DUE], args=[0]
        )
    )


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


def mark_batch_queued(
    campaign_id: str,
    batch_id: str,
    queued: int,
    invalid: Mapping[int, str],
    duplicates: int = 0,
    *,
    client: redis.Redis | None = None,
) -> None:
    """Count a batch's recipients as queued and record its invalid rows, once."""
    errors = [item for index, why in invalid.items() for item in (index, why)]
    lua(_client(client), _MARK_QUEUED)(
        keys=[keys.campaign(campaign_id, part) for part in ("batch-ids", "counts", "errors")]
        + _all_keys(campaign_id),
        args=[batch_id, queued, len(invalid), _retention(), duplicates, *errors],
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
        # After the 250 (store.feedback): of the recipients sent, over the campaign's life.
        "bounce_rate": counts["bounced"] / counts["sent"] if counts["sent"] else 0.0,
        "complaint_rate": counts["complained"] / counts["sent"] if counts["sent"] else 0.0,
    }


def errors(
    campaign_id: str, limit: int = 100, *, client: redis.Redis | None = None
) -> dict[int, str]:
    _, found = _client(client).hscan(keys.campaign(campaign_id, "errors"), count=limit)
    return {int(k): v for k, v in list(text_map(found).items())[:limit]}


def stage_claim_recipients(
    pipe: redis.client.Pipeline, campaign_id: str, lineage: str, addresses: list[str]
) -> None:
    """Claim each address for the batch ``lineage`` in the caller's pipeline: the reply
    holds GO, SENT or ELSEWHERE (another batch owns it) per address."""
    stage_script(
        pipe,
        _CLAIM_RECIPIENTS,
        keys=[keys.campaign(campaign_id, "recipients")],
        args=[lineage, *(recipient_key(a) for a in addresses)],
    )


async def mark_sent(
    client: redis.asyncio.Redis,
    campaign_id: str,
    address: str,
    *,
    account: str,
    events: str = "",
) -> None:
    """``address`` got a 250: its mark and the sent count, once (on the worker's loop)."""
    marks = [keys.campaign(campaign_id, "recipients"), keys.campaign(campaign_id, "counts"),
             keys.rates(account, int(time.time() // 3600)), keys.EVENTS]  # fmt: skip
    await lua(client, _MARK_SENT)(keys=marks, args=[recipient_key(address), events])


def waiting_batches(queue: str, *, client: redis.Redis | None = None) -> int:
    """Batches waiting in ``queue`` (kombu's list), for pacing the producer."""
    return int(_client(client).llen(keys.queue_key(queue)))
