"""The Grafana dashboard and the Prometheus alert rules in monitoring/: the rules load and
fire as their tests say (promtool), and every metric they use is one mailworker exports,
read from a real worker's endpoint and a real `mailworker exporter`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailworker.dev.devserver import free_port
from tests.helpers import wait_until, worker_process

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
_METRIC = re.compile(r"\bmailworker_[a-z_]+")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("MAILWORKER_REQUIRE_PROMTOOL"):  # .ci/run installs it
            pytest.fail("promtool is not installed (Debian: apt-get install prometheus)")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


@pytest.mark.parametrize("command", [["check", "rules", "alerts.yml"],
                                     ["test", "rules", "alerts_test.yml"]])  # fmt: skip
def test_promtool_accepts_the_rules_and_their_tests_pass(command: list[str]) -> None:
    run = subprocess.run([promtool(), *command], cwd=MONITORING, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            return str(reply.read().decode())
    except OSError:
        return None


def exported(text: str) -> set[str]:
    """Every series name an exposition offers: each family, with its histogram and counter
    suffixes."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


@pytest.fixture
def endpoints(environment: dict[str, str]) -> Iterator[set[str]]:
    worker_port, exporter_port = free_port(), free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "mailworker.cli", "exporter", "--port", str(exporter_port)],
        env={**os.environ, **environment}, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        env = {**environment, "METRICS_PORT": str(worker_port)}
        with worker_process("monitoring-probe", env):
            texts: dict[int, str] = {}

            def both_up() -> bool:
                for port in (worker_port, exporter_port):
                    if (text := scrape(port)) is not None:
                        texts[port] = text
                return len(texts) == 2

            wait_until(both_up, 30, "the worker's and the exporter's /metrics")
            yield exported(texts[worker_port]) | exported(texts[exporter_port])
    finally:
        exporter.terminate()
        exporter.wait(10)


def used_in_dashboard() -> set[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return {name for expr in exprs for name in _METRIC.findall(expr)}


def used_in_rules() -> set[str]:
    rules = (MONITORING / "alerts.yml").read_text()
    exprs = re.findall(r"expr: (?:>-\n)?((?:.+\n)+?)\s+(?:for|labels):", rules)
    return {name for expr in exprs for name in _METRIC.findall(expr)}


def test_every_metric_the_dashboard_and_rules_use_is_exported(endpoints: set[str]) -> None:
    dashboard, rules = used_in_dashboard(), used_in_rules()
    assert len(dashboard) >= 10 and len(rules) >= 5, (dashboard, rules)
    assert dashboard - endpoints == set()
    assert rules - endpoints == set()
    # What the issue asks the dashboard to show, by the metric that carries it.
    assert dashboard >= {
        "mailworker_messages_total", "mailworker_send_seconds_bucket",
        "mailworker_pool_sessions", "mailworker_queue_depth",
        "mailworker_oldest_queued_seconds", "mailworker_waiting_jobs",
        "mailworker_dead_letters", "mailworker_rate_limit_waits_total",
        "mailworker_account_paused", "mailworker_campaign_recipients",
        "mailworker_bounce_rate", "mailworker_complaint_rate",
    }  # fmt: skip
