"""End to end at a distance: ``send_email.delay()`` -> Redis -> Celery worker -> SMTP, through
a proxy that adds a real network's round trip, against the common recipe in the same run.

For each round trip (default 20 and 50 ms) and run, with the same worker concurrency
(threads 8) and the same sink behind the same proxy:

* the recipe: a Celery task opening, authenticating and closing an smtplib session per
  message (bench.baseline, about 11 round trips a message);
* mailworker with ``max_connections`` equal to the concurrency;
* mailworker with its defaults (``max_connections=4``);
* the queue floor: a Celery task with mailworker's settings that sends nothing;
* a bulk campaign of ``--campaign`` recipients on one ``bulk`` worker process.

Reported per scenario: messages/s (median of the runs), the ratio to the recipe, latency
from ``delay()`` to the sink's 250 (p50 / p99), SMTP sessions opened, and the worker's own
CPU seconds per 1,000 messages (its process's counters; the sink and proxy excluded).

    python -m bench.distance --rtt-ms 20,50 --runs 3 --messages 400 --concurrency 8
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import redis

from bench.__main__ import FLOOR_KEYS, RESULTS, Bench, Run, start_sink
from bench.campaign import TEMPLATE, rows
from bench.sink import CONNECTIONS, LATENCIES, PASSWORD, USER
from mailworker.dev.devredis import start_private_redis

SCENARIOS = ("recipe", "mailworker", "mailworker-defaults", "floor", "campaign")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt-ms", default="20,50", help="round trips to measure, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--chunking", action="store_true", help="the sink offers CHUNKING")
    parser.add_argument("--campaign", type=int, default=2000, help="recipients of the campaign")
    args = parser.parse_args()
    args.profile = False

    private = start_private_redis()
    sink, port, ca_file = start_sink(private.url, chunking=args.chunking)
    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    try:
        env = {
            "REDIS_URL": private.url,
            "SMTP_CA_FILE": ca_file,
            "DEFAULT_FROM_EMAIL": "bench@example.com",
            "UNSUBSCRIBE_SECRET": "bench-unsubscribe-secret-of-32-bytes",
            "UNSUBSCRIBE_URL": "https://bench.example.com/unsubscribe",
        }
        os.environ.update(env)
        client = redis.Redis.from_url(private.url)
        for rtt in (int(x) for x in args.rtt_ms.split(",")):
            results[rtt] = at_distance(rtt, int(port), env, client, args)
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(10)
        private.stop()
    write(results, args)


def at_distance(
    rtt: int, sink_port: int, env: dict[str, str], client: redis.Redis, args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    proxy = subprocess.Popen(
        [sys.executable, "-m", "bench.proxy", "--target", f"127.0.0.1:{sink_port}",
         "--delay", str(rtt / 2000)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port = int(proxy.stdout.readline().split()[1])  # type: ignore[union-attr]
        url = f"smtp+starttls://{USER.replace('@', '%40')}:{PASSWORD}@127.0.0.1:{port}"
        urls = {
            "recipe": url,
            "mailworker": f"{url}?max_connections={args.concurrency}&max_messages=100000",
            "mailworker-defaults": url,
            "floor": url,
            "campaign": f"{url}?max_connections={args.concurrency}&max_messages=100000",
        }
        bench = Bench({**env, "SMTP_URL": urls["mailworker"]}, client, args)
        found: dict[str, list[dict[str, Any]]] = {name: [] for name in SCENARIOS}
        for index in range(args.runs):
            for name in SCENARIOS:
                found[name].append(one(bench, name, urls[name], client))
            rates = ", ".join(f"{n} {found[n][-1]['rate']:.0f}/s" for n in SCENARIOS)
            print(f"{rtt} ms run {index + 1}: {rates}", file=sys.stderr)
        return found
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(10)


def one(bench: Bench, name: str, url: str, client: redis.Redis) -> dict[str, Any]:
    os.environ["SMTP_URL"] = url
    bench.env["SMTP_URL"] = url
    samples, sessions = client.llen(LATENCIES), int(client.get(CONNECTIONS) or 0)
    count = bench.args.messages
    if name == "recipe":
        run = bench.queued("bench.baseline", "bench-baseline", bench._baseline_producer())
    elif name == "floor":
        run = bench.queued("bench.floor", "bench-floor", bench._floor_producer(), keys=FLOOR_KEYS)
    elif name == "campaign":
        count = bench.args.campaign
        run = _campaign(bench, url)
    else:
        run = bench.queued("mailworker.worker", "email", bench._mailworker_producer(),
                           env={"SMTP_URL": url})  # fmt: skip
    time.sleep(0.05)  # the sink publishes every 5 ms
    latencies = sorted(float(x) for x in client.lrange(LATENCIES, samples, -1))
    latencies = latencies[-count:] if latencies else []
    return {
        "rate": run.rate(count),
        "p50_ms": 1000 * _quantile(latencies, 0.50),
        "p99_ms": 1000 * _quantile(latencies, 0.99),
        "sessions": int(client.get(CONNECTIONS) or 0) - sessions,
        "cpu_per_1000": _per_1000(run, count),
        "rss_mb": run.peak_rss_mb,
    }


def _campaign(bench: Bench, url: str) -> Run:
    """``--campaign`` recipients, every batch queued at once, drained by one ``bulk`` worker."""
    from mailworker.tasks.campaign import start_campaign

    def produce(count: int) -> None:
        start_campaign(TEMPLATE, rows(count), max_queued_batches=10**9)

    messages, bench.args.messages = bench.args.messages, bench.args.campaign
    try:
        return bench.queued("mailworker.worker", "bulk", produce, env={"SMTP_URL": url})
    finally:
        bench.args.messages = messages


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def _per_1000(run: Run, messages: int) -> float | None:
    return None if run.cpu_seconds is None else 1000 * run.cpu_seconds / messages


def write(results: dict[int, dict[str, list[dict[str, Any]]]], args: argparse.Namespace) -> None:
    lines = [
        f"End to end at a distance: threads {args.concurrency}, {args.messages} messages, "
        f"median of {args.runs} runs, the sink {'with' if args.chunking else 'without'} "
        f"CHUNKING (`python -m bench.distance{' --chunking' if args.chunking else ''}`)",
        "",
        "| RTT | scenario | messages/s | vs recipe | p50 / p99 latency | sessions | "
        "worker CPU s / 1000 msgs |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for rtt, found in results.items():
        recipe = statistics.median(r["rate"] for r in found["recipe"])
        for name in SCENARIOS:
            runs = found[name]
            rate = statistics.median(r["rate"] for r in runs)
            p50 = statistics.median(r["p50_ms"] for r in runs)
            p99 = statistics.median(r["p99_ms"] for r in runs)
            sessions = statistics.median(r["sessions"] for r in runs)
            cpu = [r["cpu_per_1000"] for r in runs if r["cpu_per_1000"] is not None]
            latency = "-" if p50 != p50 else f"{p50:.0f} / {p99:.0f} ms"  # NaN: no samples
            lines.append(
                f"| {rtt} ms | {name} | {rate:.0f} | {rate / recipe:.2f}x | "
                f"{latency} | {sessions:.0f} | "
                f"{statistics.median(cpu) if cpu else float('nan'):.2f} |"
            )
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    name = "distance-chunking" if args.chunking else "distance"
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2))
    print(text)


if __name__ == "__main__":
    main()
