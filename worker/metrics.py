"""Counters an operator can use: per process for Prometheus, cluster-wide in Redis.

Prometheus (prometheus-client), served by the worker on ``METRICS_PORT`` when it is set, on
``METRICS_HOST`` (127.0.0.1 unless set otherwise):

    mailworker_messages_total{account, outcome}    sent|deferred|bounced|failed|dead|suppressed
    mailworker_send_seconds{account}                histogram of one delivery attempt
    mailworker_pool_sessions{account, state}        open | idle | in_use | waiting, at scrape

The same outcome counts go to ``mailworker:stats:<account>`` in Redis (in the transaction
that records the job's outcome, so they cost no extra round trip) for ``mailworker stats``,
which sums them over every worker ever run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("mailworker.metrics")

MESSAGES = Counter("mailworker_messages", "Jobs and recipients by outcome", ["account", "outcome"])
SEND_SECONDS = Histogram(
    "mailworker_send_seconds",
    "Duration of one delivery attempt (session, permit and SMTP transaction)",
    ["account"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def count_outcomes(account: str, counts: dict[str, int]) -> None:
    """Count outcomes here (Prometheus); Redis's totals are written by the settle step."""
    for outcome, count in counts.items():
        if count:
            MESSAGES.labels(account, outcome).inc(count)


class PoolCollector(Collector):
    """Reads this process's connection pools at scrape time (no bookkeeping per send)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from mailworker.delivery.runtime import current_runtime

        family = GaugeMetricFamily(
            "mailworker_pool_sessions", "SMTP sessions per account", labels=["account", "state"]
        )
        runtime = current_runtime()
        for account, pool in (runtime.pool_stats() if runtime else {}).items():
            for state in ("open", "idle", "in_use", "waiting"):
                family.add_metric([account, state], getattr(pool, state))
        yield family


_served = False


def serve_metrics(port: int | None, host: str = "127.0.0.1", registry: Any = REGISTRY) -> bool:
    """Start the Prometheus endpoint once per process; ``None`` means metrics are off.

    It listens on ``host`` (METRICS_HOST): loopback by default, since the counters name
    accounts and the endpoint has no authentication; 0.0.0.0 for a scraper elsewhere."""
    global _served
    if port is None or _served:
        return False
    registry.register(PoolCollector())
    start_http_server(port, addr=host, registry=registry)
    _served = True
    log.info("Prometheus metrics on %s:%d/metrics", host, port)
    return True
