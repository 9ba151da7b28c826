"""What a later bounce or complaint writes: the recipient's status, counters and its event.

A report names a message by the Message-ID mailworker set: a transactional job
(``<job id@domain>``, its record ``job:<id>``) or one recipient of a campaign
(``<campaign id>-<row>@domain``). :func:`locate` finds which and whether the address was
one of its recipients; :func:`record` then writes, in one atomic step, the recipient's new
status (``bounced ...`` / ``complained ...``), the counters and the event, once per
recipient and outcome however often the report is read (a reader killed half-way reads it
again): it answers ``new`` the first time and ``repeat`` after.

    mailworker:feedback:soft:<address>   ZSET  soft bounces in the window (TTL the window)
    mailworker:rates:<account>:<hour>    HASH  sent, bounced, hard, complained (TTL 25 h)
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Literal

import redis

from mailworker.store import keys
from mailworker.store.addresses import normalize_address
from mailworker.store.campaigns import recipient_key
from mailworker.store.client import get_redis, lua
from mailworker.store.events import EMIT, Event, encode

Outcome = Literal["bounced", "complained"]
RATE_TTL = 25 * 3600
_CAMPAIGN_MESSAGE = re.compile(r"(?P<campaign>[A-Za-z0-9][A-Za-z0-9_-]*)-(?P<row>\d+)")


@dataclass(frozen=True)
class Target:
    """The message a report is about, and the recipient as that message named it."""

    job_id: str
    address: str
    account: str
    campaign: str = ""  # set for a campaign recipient
    list_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)


def locate(job_id: str, address: str, *, client: redis.Redis | None = None) -> Target | None:
    """The job ``job_id`` if ``address`` was one of its recipients; ``None`` otherwise (a
    report about mail we did not send, or whose record has ended, changes nothing)."""
    r = client or get_redis()
    account, payload, recipients = r.hmget(keys.job_status(job_id), "account", "payload",
                                           "recipients")  # fmt: skip
    if recipients is not None:
        named = {a.casefold(): a for a in json.loads(recipients)}
        if address.casefold() not in named:
            return None
        tags = (json.loads(payload) if payload else {}).get("tags") or {}
        return Target(job_id, named[address.casefold()], str(account or ""), tags=tags)
    found = _CAMPAIGN_MESSAGE.fullmatch(job_id)
    if found is None:
        return None
    campaign, key = found["campaign"], recipient_key(address)
    pipe = r.pipeline(transaction=False)
    pipe.hmget(keys.campaign(campaign, "meta"), "account", "list_id")
    pipe.hget(keys.campaign(campaign, "recipients"), key)
    (account, list_id), mark = pipe.execute()
    if account is None or mark != "sent":
        return None
    return Target(job_id, key, str(account), campaign, str(list_id or ""))


def record(
    target: Target,
    outcome: Outcome,
    detail: str,
    events: list[Event],
    *,
    hard: bool = False,
    retention: float,
    client: redis.Redis | None = None,
) -> Literal["new", "repeat", "stranger"]:
    """Write the outcome for ``target`` once; ``hard``: a hard bounce (for the rates)."""
    r, hour = client or get_redis(), int(time.time() // 3600)
    counters = [outcome, *(("hard",) if hard else ())]
    shared_keys = [keys.EVENTS, keys.rates(target.account, hour), keys.stats(target.account)]
    if target.campaign:
        verdict = lua(r, _CAMPAIGN_FEEDBACK)(
            keys=[keys.campaign(target.campaign, "feedback"),
                  keys.campaign(target.campaign, "counts"), *shared_keys],
            args=[target.address, outcome, encode(events), json.dumps(counters), RATE_TTL,
                  max(1, math.ceil(retention))],
        )  # fmt: skip
    else:
        verdict = lua(r, _JOB_FEEDBACK)(
            keys=[keys.job_status(target.job_id), *shared_keys],
            args=[target.address, outcome, f"{outcome} {detail}".strip(), encode(events),
                  json.dumps(counters), RATE_TTL],
        )  # fmt: skip
    return verdict


def count_soft_bounce(
    address: str, event_id: str, window: float, *, client: redis.Redis | None = None
) -> int:
    """Note one soft bounce of ``address`` (once per event); how many within ``window``."""
    key, now = keys.soft_bounces(normalize_address(address)), time.time()
    pipe = (client or get_redis()).pipeline(transaction=True)
    pipe.zadd(key, {event_id: now})
    pipe.zremrangebyscore(key, "-inf", now - window)
    pipe.expire(key, max(1, math.ceil(window)))
    pipe.zcard(key)
    return int(pipe.execute()[-1])


# Shared by both: counters into the hour's rates and the account's totals, and the event.
_COUNT = (
    EMIT
    + """
local function count(rates, stats, counters, ttl)
  for _, name in ipairs(cjson.decode(counters)) do
    redis.call('HINCRBY', rates, name, 1)
    redis.call('HINCRBY', stats, name, 1)
  end
  redis.call('EXPIRE', rates, ttl)
end
"""
)

# KEYS: job record, events, rates, stats. ARGV: address (as the job named it), outcome,
# status text, events (JSON), counters (JSON), rates TTL.
_JOB_FEEDBACK = (
    _COUNT
    + """
local raw = redis.call('HGET', KEYS[1], 'recipients')
if not raw then return 'stranger' end
local field = 'feedback:' .. ARGV[1]
local seen = redis.call('HGET', KEYS[1], field) or ''
if string.find(',' .. seen .. ',', ',' .. ARGV[2] .. ',', 1, true) then return 'repeat' end
local map = cjson.decode(raw)
if map[ARGV[1]] == nil then return 'stranger' end
map[ARGV[1]] = ARGV[3]
redis.call('HSET', KEYS[1], 'recipients', cjson.encode(map),
  field, seen == '' and ARGV[2] or seen .. ',' .. ARGV[2])
emit(KEYS[2], ARGV[4])
count(KEYS[3], KEYS[4], ARGV[5], tonumber(ARGV[6]))
return 'new'
"""
)

# KEYS: the campaign's feedback and counts, events, rates, stats. ARGV: address key,
# outcome, events (JSON), counters (JSON), rates TTL, campaign retention.
_CAMPAIGN_FEEDBACK = (
    _COUNT
    + """
local seen = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if string.find(',' .. seen .. ',', ',' .. ARGV[2] .. ',', 1, true) then return 'repeat' end
redis.call('HSET', KEYS[1], ARGV[1], seen == '' and ARGV[2] or seen .. ',' .. ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
emit(KEYS[3], ARGV[3])
count(KEYS[4], KEYS[5], ARGV[4], tonumber(ARGV[5]))
return 'new'
"""
)


def rates(
    accounts: list[str], hours: int = 24, *, client: redis.Redis | None = None
) -> dict[str, dict[str, float]]:
    """Per account over the last ``hours`` hours: recipients sent, bounced (hard and soft,
    after the 250), hard, complained, and the bounce and complaint rates (of those sent)."""
    now = int(time.time() // 3600)
    pipe = (client or get_redis()).pipeline(transaction=False)
    for account in accounts:
        for hour in range(now - hours + 1, now + 1):
            pipe.hgetall(keys.rates(account, hour))
    replies = pipe.execute()
    found = {}
    for i, account in enumerate(accounts):
        totals: dict[str, float] = {"sent": 0, "bounced": 0, "hard": 0, "complained": 0}
        for bucket in replies[i * hours : (i + 1) * hours]:
            for name in totals:
                totals[name] += int(bucket.get(name, 0))
        sent = totals["sent"]
        totals["hard_bounce_rate"] = totals["hard"] / sent if sent else 0.0
        totals["bounce_rate"] = totals["bounced"] / sent if sent else 0.0
        totals["complaint_rate"] = totals["complained"] / sent if sent else 0.0
        found[account] = totals
    return found
