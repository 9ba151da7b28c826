"""Every Redis key mailworker writes, in one place: its name, type, owner and end.

Nothing is kept forever by accident: each key has a TTL or a named owner that deletes it.
Keys under a ``{...}`` hash tag share one Redis Cluster slot, so one Lua script may touch
them together (kombu's transport cannot run on a Cluster, but the scripts stay portable).

    key (prefix mailworker:)         type  owner                   end
    job:<id>                         HASH  store.lifecycle         TTL 7 d (see below)
    idem:<key>                       STR   store.ledger            TTL 7 d; deleted if the job dies
    jobs:queued                      ZSET  store.lifecycle         members leave when claimed
    jobs:due                         ZSET  store.lifecycle         members leave when promoted
    jobs:leased                      ZSET  store.lifecycle         members leave when settled
    jobs:expiring                    ZSET  store.lifecycle         members leave at their expiry
    jobs:mark:<queue>                STR   store.lifecycle         TTL 1 d
    jobs:reaper                      STR   worker.housekeeping     PTTL one reaper interval
    bounces:reader                   STR   feedback.mailbox        TTL 3 polls (30 s at least)
    suppressed                       HASH  store.suppression       an operator: `suppress remove`
    suppressed:bulk                  HASH  store.suppression       expired entries: the reaper
    suppressed:pruned                STR   worker.housekeeping     TTL 1 h
    suppressed:list:<list id>        HASH  store.suppression       an operator: `suppress remove`
    jobs:held:<account>              ZSET  store.pauses            TTL pause end + 1 h; `resume`
    paused:<account>                 HASH  store.pauses            TTL the pause's end
    events                           STREAM store.events           deleted when published; capped
    feedback:soft:<address>          ZSET  store.feedback          TTL SOFT_BOUNCE_WINDOW
    rates:<account>:<hour>           HASH  store.feedback          TTL 25 h
    dead                             ZSET  store.dead              trimmed to DEAD_LETTER_RETENTION
    dead:<id>                        HASH  store.dead              TTL DEAD_LETTER_RETENTION
    stats:<account>                  HASH  store.stats             kept: the account's totals
    {account:<a>}:rate:<T>           HASH  delivery.ratelimit      PTTL one window
    {account:<a>}:rate:<domain>:<T>  HASH  delivery.ratelimit      PTTL one window
    {account:<a>}:slow               HASH  delivery.ratelimit      PTTL until back to full rate
    {account:<a>}:connections        ZSET  delivery.slots          PTTL 2 leases
    {account:<a>}:connection-queue   ZSET  delivery.slots          PTTL 2 leases
    {account:<a>}:connection-alive   ZSET  delivery.slots          PTTL 2 leases
    {account:<a>}:failing-since      STR   worker.failing          TTL 1 d; deleted on a 250
    {account:<a>}:failing-alerted    STR   worker.failing          TTL 1 h or the threshold
    {account:<a>}:alerted:<rate>     STR   feedback.alerts         TTL 1 d
    {campaign:<id>}:meta             HASH  store.campaigns         TTL CAMPAIGN_RETENTION, renewed
    {campaign:<id>}:counts           HASH  store.campaigns         TTL CAMPAIGN_RETENTION, renewed
    {campaign:<id>}:batch-ids        SET   store.campaigns         TTL CAMPAIGN_RETENTION, renewed
    {campaign:<id>}:recipients       HASH  store.campaigns         TTL CAMPAIGN_RETENTION, renewed
    {campaign:<id>}:errors           HASH  store.campaigns         TTL CAMPAIGN_RETENTION, renewed
    {campaign:<id>}:parked           ZSET  store.campaigns         TTL CAMPAIGN_RETENTION, renewed
    {campaign:<id>}:feedback         HASH  store.feedback          TTL CAMPAIGN_RETENTION, renewed

A job's record holds its sent-ledger (``sent:<address>`` fields) and lives 7 days after it
ended, or (waiting) 7 days past its due time; a parked campaign batch's record lives
CAMPAIGN_RETENTION. Campaign keys get CAMPAIGN_RETENTION again on every write (all seven
together, so they end together after the last activity); `mailworker dead purge
[--older-than AGE]` deletes dead letters early. The stats hashes are a few counters per
account, kept as its totals.

Celery's Redis transport (kombu) owns every key under ``mailworker:celery:`` (kombu's
``global_keyprefix``): the queue lists (``email``, ``bulk``, see :func:`queue_key`),
``unacked``, ``unacked_index`` and the bindings; they are kombu's to create and delete.
"""

from __future__ import annotations

PREFIX = "mailworker:"
CELERY_PREFIX = f"{PREFIX}celery:"  # kombu's keys: queues, unacked jobs, bindings


def job_status(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def idempotency(key: str) -> str:
    return f"{PREFIX}idem:{key}"


SUPPRESSED = f"{PREFIX}suppressed"
SUPPRESSED_BULK = f"{PREFIX}suppressed:bulk"


def suppressed_list(list_id: str) -> str:
    return f"{PREFIX}suppressed:list:{list_id}"


# The job state machine's indexes (store.lifecycle): members are job ids; a member whose
# record has expired is dropped the next time a script meets it.
JOBS_QUEUED = f"{PREFIX}jobs:queued"  # id -> queued_at: waiting on a broker queue
JOBS_DUE = f"{PREFIX}jobs:due"  # id -> due time: scheduled, deferred, paused
JOBS_LEASED = f"{PREFIX}jobs:leased"  # id -> lease end: being sent
JOBS_EXPIRING = f"{PREFIX}jobs:expiring"  # id -> expires_at: jobs given an expiry
REAPER_LOCK = f"{PREFIX}jobs:reaper"
BOUNCE_READER_LOCK = f"{PREFIX}bounces:reader"
SUPPRESSION_PRUNED = f"{PREFIX}suppressed:pruned"


def claimed_mark(queue: str) -> str:
    """The newest queued_at claimed from ``queue``: older queued jobs were popped before."""
    return f"{PREFIX}jobs:mark:{queue}"


def held(account: str) -> str:
    return f"{PREFIX}jobs:held:{account}"


def paused(account: str) -> str:
    return f"{PREFIX}paused:{account}"


DEAD = f"{PREFIX}dead"
EVENTS = f"{PREFIX}events"


def soft_bounces(address: str) -> str:
    return f"{PREFIX}feedback:soft:{address}"


def rates(account: str, hour: int) -> str:
    """One hour's sent, bounced, hard and complained counts of an account (24 h rates)."""
    return f"{PREFIX}rates:{account}:{hour}"


def dead_letter(job_id: str) -> str:
    return f"{DEAD}:{job_id}"


def stats(account: str) -> str:
    return f"{PREFIX}stats:{account}"


def account(name: str, suffix: str) -> str:
    """One of an account's limiter keys (rate windows, slow-down, slots, failing)."""
    return f"{PREFIX}{{account:{name}}}:{suffix}"


def campaign(campaign_id: str, part: str) -> str:
    """``meta``, ``counts``, ``batches``, ``sent`` or ``errors`` of one campaign."""
    return f"{PREFIX}{{campaign:{campaign_id}}}:{part}"


def queue_key(queue: str) -> str:
    """The Redis list kombu keeps ``queue``'s messages in (kombu owns it)."""
    return f"{CELERY_PREFIX}{queue}"
