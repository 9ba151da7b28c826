"""The rate limiter's cost on the delivery path alone, without Celery's noise around it.

One process, one :class:`~worker.runtime.Runtime`, the sink of ``make bench``: batches of
messages go out over 4 pooled sessions, alternately through an account without limits and
the same account with limits far above the send rate. Prints the median ratio.

    python -m bench.limiter   (run by ``python -m bench``; needs its environment)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from mailworker.delivery.runtime import Runtime
from mailworker.settings import load_settings
from mailworker.tasks.validation import build_job

LIMITS = "rate=100000/s,100000000/d&rate.example.com=100000/s"


def main(messages: int = 1000, rounds: int = 9) -> None:
    base = os.environ["SMTP_URL"]
    settings = load_settings({**os.environ, "SMTP_URL_LIMITED": f"{base}&{LIMITS}"})
    runtime = Runtime()
    rates: dict[str, list[float]] = {"default": [], "limited": []}
    try:
        for account in ("default", "limited"):  # warm both pools up
            send_round(runtime, settings, account, 20)
        for _ in range(rounds):
            for account in ("default", "limited"):
                rates[account].append(send_round(runtime, settings, account, messages))
    finally:
        runtime.close()
    ratios = [b / a for a, b in zip(rates["default"], rates["limited"], strict=True)]
    print(
        json.dumps(
            {
                "without": statistics.median(rates["default"]),
                "with": statistics.median(rates["limited"]),
                "ratio": statistics.median(ratios),
                "ratios": ratios,
            }
        )
    )


def send_round(runtime: Runtime, settings: object, account: str, count: int) -> float:
    jobs = [
        build_job(
            settings,  # type: ignore[arg-type]
            {"to": f"reader{n}@example.com", "subject": "s", "text": "x", "account": account},
        )
        for n in range(count)
    ]
    started = time.perf_counter()
    results = runtime.deliver_batch(jobs, _ignore, settings)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    return count / elapsed


async def _ignore(_job_id: str, _recipients: tuple[str, ...]) -> None:
    return None


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
