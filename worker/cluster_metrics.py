"""The cluster's gauges, read from Redis at scrape time by one exporter process.

    mailworker exporter --port 9104     (METRICS_HOST as for workers: loopback by default)

A worker's endpoint (worker.metrics) counts what that process did; what belongs to the
cluster (how long the queue is, how old its oldest job, who is paused) is the same seen
from any worker, so one process serves it and a dashboard does not sum it N times:

    mailworker_queue_depth{queue}                   messages waiting in a broker queue
    mailworker_oldest_queued_seconds                age of the oldest job waiting in a queue
    mailworker_waiting_jobs                         scheduled, deferred and paused jobs
    mailworker_dead_letters                         dead letters kept (DEAD_LETTER_RETENTION)
    mailworker_account_paused{account}              1 while the account is paused
    mailworker_campaign_recipients{campaign, kind}  total | done, campaigns not yet finished
    mailworker_bounce_rate{account, kind}           as on workers (worker.metrics)
    mailworker_complaint_rate{account}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mailworker.settings import Settings
from mailworker.store import campaigns, keys
from mailworker.store.client import get_redis, text_map
from mailworker.store.pauses import read_pause, stage_read_pause
from mailworker.tasks.app import BULK_QUEUE, PRIORITY_QUEUE, TRANSACTIONAL_QUEUE
from mailworker.worker.metrics import RateCollector

log = logging.getLogger("mailworker.metrics")

QUEUES = (PRIORITY_QUEUE, TRANSACTIONAL_QUEUE, BULK_QUEUE)
_CAMPAIGN_SCAN_EVERY = 60.0  # seconds: finding campaigns walks the keyspace, so not per scrape
_MAX_CAMPAIGNS = 50


class ClusterCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.accounts = sorted(settings.accounts)
        self._campaigns: list[str] = []
        self._scanned = 0.0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            yield from self._collect(get_redis())
        except Exception:  # noqa: BLE001 - Redis away: an empty scrape, not an error page
            log.warning("cluster metrics: Redis did not answer", exc_info=True)

    def _collect(self, client: Any) -> Iterator[GaugeMetricFamily]:
        pipe = client.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(keys.queue_key(queue))
        pipe.zrange(keys.JOBS_QUEUED, 0, 0, withscores=True)
        pipe.zcard(keys.JOBS_DUE)
        pipe.zcard(keys.DEAD)
        for account in self.accounts:
            stage_read_pause(pipe, account)
        replies, n = pipe.execute(), len(QUEUES)
        depths, (oldest, waiting, dead), pauses = replies[:n], replies[n : n + 3], replies[n + 3 :]
        depth = gauge("mailworker_queue_depth", "Messages waiting in a broker queue", ["queue"])
        for queue, count in zip(QUEUES, depths, strict=True):
            depth.add_metric([queue], count)
        yield depth
        age = max(0.0, time.time() - oldest[0][1]) if oldest else 0.0
        yield gauge("mailworker_oldest_queued_seconds", "Age of the oldest queued job", [], age)
        yield gauge("mailworker_waiting_jobs", "Scheduled, deferred and paused jobs", [], waiting)
        yield gauge("mailworker_dead_letters", "Dead letters kept", [], dead)
        paused = gauge("mailworker_account_paused", "1 while the account is paused", ["account"])
        for account, record in zip(self.accounts, pauses, strict=True):
            paused.add_metric([account], 1 if read_pause(text_map(record)) else 0)
        yield paused
        yield self._campaign_progress(client)

    def _campaign_progress(self, client: Any) -> GaugeMetricFamily:
        family = gauge("mailworker_campaign_recipients", "Recipients of campaigns not finished",
                       ["campaign", "kind"])  # fmt: skip
        if time.monotonic() - self._scanned > _CAMPAIGN_SCAN_EVERY:
            self._scanned = time.monotonic()
            pattern = keys.campaign("*", "meta")
            found = client.scan_iter(pattern, count=1000)
            self._campaigns = [k.split("{campaign:", 1)[1].split("}", 1)[0] for k in found]
        for campaign_id in self._campaigns[:_MAX_CAMPAIGNS]:
            record = campaigns.status(campaign_id, client=client)
            if record is None or record.get("state") in ("cancelled", "finished"):
                continue
            if record.get("total") is not None and record["done"] >= record["total"]:
                continue
            family.add_metric([campaign_id, "done"], record["done"])
            family.add_metric([campaign_id, "total"], record.get("total") or record["queued"])
        return family


def gauge(name: str, documentation: str, labels: list[str], value: float | None = None) -> Any:
    """A gauge family; with ``value``, its one unlabelled sample."""
    family = GaugeMetricFamily(name, documentation, labels=labels)
    if value is not None:
        family.add_metric([], value)
    return family


def cluster_registry(settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ClusterCollector(settings))
    registry.register(RateCollector(sorted(settings.accounts)))
    return registry


def serve_cluster_metrics(settings: Settings, port: int, host: str) -> None:
    start_http_server(port, addr=host, registry=cluster_registry(settings))
    log.info("cluster metrics on %s:%d/metrics", host, port)
