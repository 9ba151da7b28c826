"""Which account a transactional job goes through: its own, or one of its fallbacks.

    SMTP_URL=smtp+starttls://app%40example.com:...@smtp.example.com:587?fallback=backup
    SMTP_URL_BACKUP=smtps://...@smtp.other.example:465

A job names one account, its primary. Each attempt starts with the primary unless it is
paused, then goes down its ``fallback=`` list, each account with its own limits and
connection caps; with ``route=roundrobin`` each attempt (per worker process) starts one
further along the list, spreading volume. What hands a job on is
:func:`mailworker.delivery.outcome.fails_over`. Nothing is remembered but what Redis
already holds (an account's pause, its failing clock), so when the primary's pause ends, or
it answers again, new jobs go to it again. The Message-ID derives from the job, not the
account: it is the same whichever account sends it.
"""

from __future__ import annotations

import itertools
import time

import redis

from mailworker.settings import Settings
from mailworker.store.pauses import paused_until
from mailworker.worker.failing import failing_key

_turns = itertools.count()


def accounts_for(
    primary: str,
    settings: Settings,
    primary_pause: tuple[float, str] | None,
    client: redis.Redis,
) -> list[str]:
    """The accounts to try, in order; empty when every one is paused."""
    account = settings.accounts.get(primary)
    if account is None or not account.fallbacks:
        return [primary] if primary_pause is None else []
    names = [primary, *account.fallbacks]
    if account.round_robin:
        start = next(_turns) % len(names)
        names = names[start:] + names[:start]
    paused = {primary} if primary_pause is not None else set()
    paused |= {name for name in account.fallbacks if paused_until(name, client=client)}
    return [name for name in names if name not in paused]


def failing_for(account: str, client: redis.Redis) -> float:
    """Seconds since the account's first transient failure after its last send (0 if none)."""
    since = client.get(failing_key(account))
    return max(0.0, time.time() - float(since)) if since else 0.0
