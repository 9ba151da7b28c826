"""When to try again: exponential backoff with full jitter, bounded by attempts and age."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from mailworker.settings import RetryPolicy


def compute_backoff(
    attempt: int, policy: RetryPolicy, *, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): jittered, never above the cap.

    The jitter spreads a burst of failures (a provider hiccup) so the retries do not come
    back as one burst: a uniform draw from the upper half of the exponential step.
    """
    step = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
    return step / 2 + rand() * step / 2


def next_retry_at(
    attempt: int,
    created_at: float,
    policy: RetryPolicy,
    *,
    hint: float | None = None,
    now: float | None = None,
) -> float | None:
    """When attempt ``attempt + 1`` should run, or ``None`` when the job has run out of time.

    A server hint ("try again in 30 seconds") wins over the backoff when it is longer.
    """
    now = time.time() if now is None else now
    if attempt >= policy.max_attempts:
        return None
    delay = compute_backoff(attempt, policy)
    if hint is not None:
        delay = max(delay, min(hint, policy.max_delay))
    due = now + delay
    if created_at and due - created_at > policy.max_age:
        return None
    return due
