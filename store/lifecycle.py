"""One job, one record, one state: the state machine every job (and campaign batch) lives by.

The record ``mailworker:job:<id>`` is the single source of truth: its state, attempt,
lease, due time, payload and per-recipient results. Status, stats and dead letters are
written by the same atomic step that moves the state (Lua in
:mod:`mailworker.store.lifecycle_lua`, on the Redis server's clock), and each step checks
the state it expects, so two workers can never both move one job.

    state      event                          next state   effects
    (none)     enqueue                        queued       index queued (queued_at)
    (none)     enqueue with send_at later     scheduled    index due
    queued     claim (a worker took it)       sending      lease; index leased
    sending    lease lapsed (worker gone)     queued       reaper republishes; rescues+1
    sending    claim after the lease lapsed   sending      a new lease; rescues+1
    sending    250 for everyone left          sent         stats; TTL 7 d
    sending    4xx, throttle, busy, quota     deferred     index due; attempt+1 if spent
    sending    account paused                 paused       index due and held:<account>
    sending    5xx for all, or out of tries   failed       dead letter; stats; TTL 7 d
    scheduled  due (mover)                    queued       published
    deferred   due (mover)                    queued       published
    paused     due, or `mailworker resume`    queued       published
    queued     broker message lost (reaper)   queued       a new queued_at; republished
    waiting    cancel / expiry                cancelled / expired (terminal, TTL 7 d)

A broker message whose job is ``sending`` under a live lease, already ended, or waiting
for its time is a stale copy: the worker acks it and does nothing (:func:`claim` says
``busy`` or ``skip``). What returns a job that nobody is sending is the reaper
(:mod:`mailworker.worker.housekeeping`): an expired lease, or a ``queued`` job whose message
is in neither the queue list nor kombu's unacked hash although the queue has moved past it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
import redis.asyncio

from mailworker.store import keys
from mailworker.store import lifecycle_lua as scripts
from mailworker.store.client import execute_scripted, get_redis, lua, stage_script

State = Literal[
    "queued",
    "scheduled",
    "sending",
    "deferred",
    "paused",
    "sent",
    "failed",
    "cancelled",
    "expired",
]
TERMINAL: frozenset[str] = frozenset({"sent", "failed", "cancelled", "expired"})
WAITING: frozenset[str] = frozenset({"queued", "scheduled", "deferred", "paused"})
RECORD_TTL = 7 * 24 * 3600  # a terminal record's life; a waiting one lives past its due time
JOB_PREFIX = keys.job_status("")


@dataclass(frozen=True)
class Claim:
    """What :func:`claim` found: ``claimed`` (ours now), ``busy`` or ``skip``."""

    verdict: Literal["claimed", "busy", "skip"]
    payload: dict[str, Any] | None = None
    attempt: int = 1
    rescues: int = 0
    sent: frozenset[str] = frozenset()  # recipients that got a 250 in an earlier attempt
    suppressed: tuple[bool, ...] = ()  # per address given to the claim, in order
    pause: dict[str, str] = field(default_factory=dict)  # the account's pause record
    state: str = ""  # for skip: the state the job is in
    busy_for: float = 0.0  # for busy: seconds left on the other worker's lease


@dataclass(frozen=True)
class Ready:
    """A job to put on its queue (promoted, reaped or found lost)."""

    job_id: str
    queue: str
    task: str | None
    payload: dict[str, Any]


def _client(client: redis.Redis | None) -> redis.Redis:
    return client or get_redis()


def enqueue(
    job_id: str,
    payload: dict[str, Any],
    *,
    queue: str,
    account: str,
    task: str = "",
    send_at: float | None = None,
    revive: bool = False,
    events: str = "",
    expires_at: float | None = None,
    client: redis.Redis | None = None,
) -> tuple[State | Literal["exists"], float]:
    """Create the record, ``queued`` (or ``scheduled`` when ``send_at`` is later); with
    ``revive``, a job that ended failed, cancelled or expired starts again. ``events``
    (store.events.encode) are written only if the job is created. A job with
    ``expires_at`` is indexed by it: :func:`take_expired` finds it when it comes."""
    state, at = lua(_client(client), scripts.ENQUEUE)(
        keys=[
            keys.job_status(job_id),
            keys.JOBS_QUEUED,
            keys.JOBS_DUE,
            keys.EVENTS,
            keys.JOBS_EXPIRING,
        ],
        args=[
            job_id,
            queue,
            task,
            account,
            payload.get("attempt", 1),
            payload.get("created_at", 0),
            json.dumps(payload),
            "" if send_at is None else send_at,
            RECORD_TTL,
            "1" if revive else "",
            events,
            "" if expires_at is None else repr(expires_at),
        ],
    )
    return state, float(at) if at else 0.0


def stage_claim(
    pipe: Any,
    job_id: str,
    owner: str,
    lease: float,
    *,
    queue: str,
    adopt: dict[str, Any] | None = None,
    task: str = "",
    account: str = "",
    suppression_forms: Iterable[str] = (),
) -> None:
    """Claim the job in the caller's pipeline (one EVALSHA); :func:`read_claim` decodes
    the reply. ``suppression_forms``: the recipients as the suppression list keys them."""
    adopt = adopt or {}
    stage_script(
        pipe,
        scripts.CLAIM,
        keys=[
            keys.job_status(job_id),
            keys.JOBS_QUEUED,
            keys.JOBS_LEASED,
            keys.claimed_mark(queue),
            keys.SUPPRESSED,
            keys.paused(account),
        ],
        args=[
            job_id,
            owner,
            lease,
            json.dumps(adopt) if adopt else "",
            queue,
            task,
            account,
            adopt.get("created_at", 0),
            adopt.get("attempt", 1),
            RECORD_TTL,
            *suppression_forms,
        ],
    )


def read_claim(reply: list[Any]) -> Claim:
    verdict = reply[0]
    if verdict == "busy":
        return Claim("busy", busy_for=float(reply[1]))
    if verdict == "skip":
        return Claim("skip", state=str(reply[1]))
    flags = int(reply[6])
    pause = {"until": reply[4], "reason": reply[5]} if reply[4] else {}
    return Claim(
        "claimed",
        payload=json.loads(reply[1]),
        attempt=int(reply[2] or 1),
        rescues=int(reply[3] or 0),
        suppressed=tuple(flag == "1" for flag in reply[7 : 7 + flags]),
        pause=pause,
        sent=frozenset(reply[7 + flags :]),
    )


def claim(
    job_id: str, owner: str, lease: float, *, client: redis.Redis | None = None, **options: Any
) -> Claim:
    """:func:`stage_claim` (same ``options``) in a pipeline of its own, its reply decoded."""
    staged = execute_scripted(
        _client(client), lambda pipe: stage_claim(pipe, job_id, owner, lease, **options)
    )
    return read_claim(staged[0])


async def mark_sent_async(
    client: redis.asyncio.Redis, job_id: str, recipients: tuple[str, ...], account: str
) -> None:
    """Write down recipients that got a 250, on the worker's loop right after it."""
    await lua(client, scripts.MARK_SENT)(keys=_sent_keys(job_id, account), args=list(recipients))


def mark_sent(
    job_id: str, recipients: tuple[str, ...], account: str, *, client: redis.Redis | None = None
) -> None:
    """:func:`mark_sent_async` for synchronous callers."""
    lua(_client(client), scripts.MARK_SENT)(keys=_sent_keys(job_id, account), args=list(recipients))


def _sent_keys(job_id: str, account: str) -> list[str]:
    return [keys.job_status(job_id), keys.rates(account, int(time.time() // 3600))]


def renew(
    leases: dict[str, str], lease: float, *, client: redis.Redis | None = None
) -> dict[str, bool]:
    """Extend every lease in ``leases`` (job id -> owner); which ones are still held."""
    if not leases:
        return {}

    def build(pipe: Any) -> None:
        for job_id, owner in leases.items():
            stage_script(
                pipe,
                scripts.RENEW,
                [keys.job_status(job_id), keys.JOBS_LEASED],
                [job_id, owner, lease],
            )

    held = execute_scripted(_client(client), build)
    return {job_id: bool(still) for job_id, still in zip(leases, held, strict=True)}


@dataclass(frozen=True)
class Settlement:
    """How an attempt ends: the new state and everything written with it."""

    state: State
    account: str
    fields: dict[str, str]
    counts: dict[str, int]
    due: float | None = None  # an absolute time
    delay: float | None = None  # or seconds from now on the server's clock
    # A set that can release the job early (an account's pause: `mailworker resume`; a
    # campaign's parked batches), and how long it outlives the due time.
    held_in: str | None = None
    held_for: float = 3600.0
    dead_letter: dict[str, str] | None = None
    counters: str | None = None  # default: the account's stats hash
    notes_in: str | None = None  # a hash of notes written with it (why recipients failed)
    notes: dict[str, str] = field(default_factory=dict)
    keep_for: float = RECORD_TTL  # the record's life once settled
    events: str = ""  # store.events.encode: written only if the lease still holds


def settle(
    job_id: str,
    owner: str,
    settlement: Settlement,
    *,
    dead_retention: float,
    client: redis.Redis | None = None,
) -> tuple[bool, float | None]:
    """Move the job out of ``sending``: ``(done, due)``; not done if the lease was lost."""
    s = settlement
    done, due = lua(_client(client), scripts.SETTLE)(
        keys=[
            keys.job_status(job_id),
            keys.JOBS_LEASED,
            keys.JOBS_DUE,
            s.counters or keys.stats(s.account),
            s.held_in or keys.held(s.account),
            keys.DEAD,
            keys.dead_letter(job_id),
            keys.account(s.account, "failing-since"),
            keys.account(s.account, "failing-alerted"),
            s.notes_in or keys.job_status(job_id),
            keys.EVENTS,
        ],
        args=[
            job_id,
            owner,
            s.state,
            "" if s.due is None else s.due,
            "" if s.delay is None else s.delay,
            json.dumps(s.fields),
            json.dumps(s.counts),
            json.dumps(s.dead_letter) if s.dead_letter is not None else "",
            s.keep_for,
            dead_retention,
            "" if s.held_in is None else s.held_for,
            json.dumps(s.notes),
            s.events,
        ],
    )
    return bool(done), float(due) if due else None


def _ready(raw: list[Any]) -> list[Ready]:
    return [
        Ready(job_id, queue, task or None, json.loads(payload))
        for job_id, queue, task, payload in zip(
            raw[::4], raw[1::4], raw[2::4], raw[3::4], strict=True
        )
        if payload
    ]


def promote_due(*, limit: int = 200, client: redis.Redis | None = None) -> list[Ready]:
    """Waiting jobs whose time has come, now ``queued``: the caller publishes them."""
    raw = lua(_client(client), scripts.PROMOTE)(
        keys=[keys.JOBS_DUE, keys.JOBS_QUEUED], args=[JOB_PREFIX, limit]
    )
    return _ready(raw)


def reap_leases(*, limit: int = 200, client: redis.Redis | None = None) -> list[Ready]:
    """Jobs whose lease lapsed, now ``queued`` again: the caller publishes them."""
    raw = lua(_client(client), scripts.REAP)(
        keys=[keys.JOBS_LEASED, keys.JOBS_QUEUED], args=[JOB_PREFIX, limit]
    )
    return _ready(raw)


def requeue_lost(job_id: str, queued_at: str, *, client: redis.Redis | None = None) -> Ready | None:
    """Give a lost ``queued`` job a new queued_at, unless it moved since it was judged."""
    raw = lua(_client(client), scripts.REQUEUE_LOST)(
        keys=[keys.job_status(job_id), keys.JOBS_QUEUED], args=[job_id, queued_at]
    )
    return _ready([job_id, *raw])[0] if raw else None


def end_waiting(
    job_id: str,
    state: Literal["cancelled", "expired"],
    reason: str,
    *,
    events: str = "",
    client: redis.Redis | None = None,
) -> str:
    """End a job nobody is sending; the state it was in, or ``''`` if it was not waiting."""
    return str(
        lua(_client(client), scripts.END_WAITING)(
            keys=[keys.job_status(job_id), keys.JOBS_QUEUED, keys.JOBS_DUE, keys.EVENTS],
            args=[job_id, state, reason, RECORD_TTL, events, keys.stats("")],
        )
    )


def take_expired(*, limit: int = 200, client: redis.Redis | None = None) -> list[str]:
    """Ids of jobs whose expiry has come, taken off the index: the caller ends each one
    that still waits (:func:`end_waiting`); one being sent is its worker's to end."""
    raw = lua(_client(client), scripts.TAKE_EXPIRED)(keys=[keys.JOBS_EXPIRING], args=[limit])
    return [str(job_id) for job_id in raw]


def payload_of(job_id: str, *, client: redis.Redis | None = None) -> dict[str, Any] | None:
    """The job's payload as its record holds it, or ``None`` if the record is gone."""
    raw = _client(client).hget(keys.job_status(job_id), "payload")
    return json.loads(raw) if raw else None


def due_at(job_id: str, *, client: redis.Redis | None = None) -> float | None:
    """When a waiting job (scheduled, deferred, paused) is due, or ``None``."""
    score = _client(client).zscore(keys.JOBS_DUE, job_id)
    return float(score) if score is not None else None


def forget(job_id: str, *, client: redis.Redis | None = None) -> None:
    """Drop a job that was never queued (its enqueue failed): record and index entries."""
    pipe = _client(client).pipeline(transaction=True)
    pipe.delete(keys.job_status(job_id))
    pipe.zrem(keys.JOBS_QUEUED, job_id)
    pipe.zrem(keys.JOBS_DUE, job_id)
    pipe.zrem(keys.JOBS_EXPIRING, job_id)
    pipe.execute()
