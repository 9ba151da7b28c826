"""The bulk scenario of ``make bench``: a campaign of N recipients into the sink.

Measures, in the same session as the transactional scenarios:

* campaign throughput (first to last message at the sink, one ``bulk`` worker process);
* producer peak RSS for N and N/10 recipients (it should not grow with N);
* Redis bytes per queued recipient (everything queued before any worker runs);
* transactional latency (``send_email.delay()`` to "sent"), p50 and p99, idle and while the
  campaign drains on its own worker.

``python -m bench.campaign produce N`` is the producer, run in its own process so its RSS is
its own.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from bench.cpu import cpu_seconds as _cpu_seconds
from bench.sink import COUNTER, LAST
from mailworker.worker.commands import celery_worker_argv

TEMPLATE = {
    "subject": "Hello {{ first_name }}",
    "text": "Dear {{ first_name }}, the {{ season }} sale starts now. Item {{ n }}.",
}


@dataclass
class CampaignResult:
    recipients: int
    seconds: float
    producer_rss_mb: float
    producer_rss_small_mb: float
    redis_bytes_per_recipient: float
    latency_idle: tuple[float, float]
    latency_during: tuple[float, float]
    cpu_per_1000: float | None = None  # the bulk worker's own CPU seconds per 1,000 sent

    @property
    def rate(self) -> float:
        return self.recipients / self.seconds


def rows(count: int) -> Iterator[dict[str, str]]:
    for n in range(count):
        yield {"email": f"reader{n}@example.com", "first_name": f"Name{n}", "season": "winter",
               "n": str(n)}  # fmt: skip


def produce(count: int) -> None:
    from mailworker.tasks.campaign import start_campaign

    started = time.time()
    campaign_id = start_campaign(TEMPLATE, rows(count), max_queued_batches=10**9)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"id": campaign_id, "rss_mb": peak_mb, "seconds": time.time() - started}))


def run(env: dict[str, str], client: redis.Redis, count: int, concurrency: int) -> CampaignResult:
    full_env = {**os.environ, **env}
    small = _produce(max(count // 10, 1), full_env)
    client.delete(*client.keys("mailworker:celery:bulk*") or ["-"])  # drop the small one
    before = _used_memory(client)
    big = _produce(count, full_env)
    per_recipient = (_used_memory(client) - before) / count

    transactional = subprocess.Popen(
        celery_worker_argv("email", concurrency=concurrency, loglevel="ERROR"), env=full_env
    )
    try:
        _latencies(client, 3)  # warm-up: the worker is up, its session open
        idle = _latencies(client, 30)
        offset = int(client.get(COUNTER) or 0)
        bulk = subprocess.Popen(
            celery_worker_argv("bulk", concurrency=concurrency, loglevel="ERROR"), env=full_env
        )
        try:
            while int(client.get(COUNTER) or 0) == offset:
                time.sleep(0.005)
            first = time.time()
            time.sleep(2)
            during = _latencies(client, 30)
            while int(client.get(COUNTER) or 0) - offset < count + len(during):
                time.sleep(0.05)
            seconds = float(client.get(LAST) or time.time()) - first
            spent = _cpu_seconds(bulk.pid)
        finally:
            bulk.terminate()
            bulk.wait(30)
    finally:
        transactional.terminate()
        transactional.wait(30)
    return CampaignResult(
        count, seconds, big["rss_mb"], small["rss_mb"], per_recipient, idle, during,
        None if spent is None else 1000 * spent / count,
    )  # fmt: skip


def _produce(count: int, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.campaign", "produce", str(count)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _latencies(client: redis.Redis, count: int) -> tuple[float, float]:
    """Send ``count`` transactional messages 100 ms apart: p50 and p99 seconds to "sent"."""
    from mailworker.tasks import send_email, status

    sent_at = {}
    for n in range(count):
        result = send_email.delay(to=f"urgent{n}@example.com", subject="reset", text="x")
        sent_at[result.id] = time.time()
        time.sleep(0.1)
    latencies = []
    for job_id, started in sent_at.items():
        while (record := status(job_id)) is None or record["state"] != "sent":
            time.sleep(0.01)
        latencies.append(float(record["updated_at"]) - started)
    cuts = statistics.quantiles(latencies, n=100)
    return statistics.median(latencies), cuts[98]


if __name__ == "__main__":
    if sys.argv[1:2] == ["produce"]:
        produce(int(sys.argv[2]))
