"""`mailworker exporter`: the cluster's gauges for Prometheus, from one process."""

from __future__ import annotations

import threading

import click

from mailworker.cli.base import console, current_settings, main


@main.command()
@click.option("--port", default=9104, show_default=True, help="Port of the /metrics endpoint.")
@click.option(
    "--host", default=None, help="Address to listen on (default METRICS_HOST: 127.0.0.1)."
)
def exporter(port: int, host: str | None) -> None:
    """Serve queue depth, the oldest queued job's age, waiting jobs, dead letters, account
    pauses, campaign progress and the bounce and complaint rates (read from Redis at each
    scrape). Run one per cluster; each worker's METRICS_PORT serves its own counters."""
    from mailworker.worker.cluster_metrics import serve_cluster_metrics

    settings = current_settings()
    host = host or settings.observability.metrics_host
    serve_cluster_metrics(settings, port, host)
    console.print(f"cluster metrics on http://{host}:{port}/metrics (Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
