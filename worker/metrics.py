"""Counters an operator can use: per process for Prometheus, cluster-wide in Redis.

Prometheus (prometheus-client), served by the worker on ``METRICS_PORT`` when it is set, on
``METRICS_HOST`` (127.0.0.1 unless set otherwise):

    mailworker_messages_total{account, outcome}    sent|deferred|bounced|failed|dead|suppressed
                                                    |expired
    mailworker_rate_limit_waits_total{account}      jobs put off by a rate limit or quota
    mailworker_send_seconds{account}                histogram of one delivery attempt
    mailworker_pool_sessions{account, state}        open | idle | in_use | waiting, at scrape
    mailworker_bounce_rate{account, kind}           hard | all, of recipients sent, last 24 h
    mailworker_complaint_rate{account}              of recipients sent, last 24 h (Redis)

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
RATE_LIMIT_WAITS = Counter(
    "mailworker_rate_limit_waits", "Jobs put off by a rate limit or quota", ["account"]
)
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


class RateCollector(Collector):
    """The cluster's 24-hour bounce and complaint rates per account, read from Redis at
    scrape time (store.feedback): the same on every worker, so any one scrape will do."""

    def __init__(self, accounts: list[str]) -> None:
        self.accounts = accounts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from mailworker.store.feedback import rates

        bounce = GaugeMetricFamily("mailworker_bounce_rate",
                                   "Bounced recipients per recipient sent, last 24 hours",
                                   labels=["account", "kind"])  # fmt: skip
        complaint = GaugeMetricFamily("mailworker_complaint_rate",
                                      "Complaints per recipient sent, last 24 hours",
                                      labels=["account"])  # fmt: skip
        try:
            found = rates(self.accounts)
        except Exception:  # noqa: BLE001 - Redis away: a scrape without these, not an error page
            found = {}
        for account, values in found.items():
            bounce.add_metric([account, "hard"], values["hard_bounce_rate"])
            bounce.add_metric([account, "all"], values["bounce_rate"])
            complaint.add_metric([account], values["complaint_rate"])
        yield bounce
        yield complaint


_served = False


def serve_metrics(
    port: int | None,
    host: str = "127.0.0.1",
    registry: Any = REGISTRY,
    accounts: list[str] | None = None,
) -> bool:
    """Start the Prometheus endpoint once per process; ``None`` means metrics are off.

    It listens on ``host`` (METRICS_HOST): loopback by default, since the counters name
    accounts and the endpoint has no authentication; 0.0.0.0 for a scraper elsewhere."""
    global _served
    if port is None or _served:
        return False
    registry.register(PoolCollector())
    registry.register(RateCollector(accounts or []))
    start_http_server(port, addr=host, registry=registry)
    _served = True
    log.info("Prometheus metrics on %s:%d/metrics", host, port)
    return True
