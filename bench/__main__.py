"""``make bench``: end-to-end throughput of mailworker against the common recipe and the ceiling.

Every scenario runs in the same session against the same SMTP sink (STARTTLS + AUTH, its own
process) and a private Redis, with the same worker concurrency; numbers are reported as
ratios to the baseline measured in the same run, because machines here are noisy.

    python -m bench --messages 500 --runs 3 --concurrency 4
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.cpu import cpu_seconds
from bench.sink import COUNTER, FLOOR_DONE, FLOOR_LAST, LAST, PASSWORD, USER
from mailworker.dev.devredis import start_private_redis
from mailworker.worker.commands import celery_worker_argv

RESULTS = Path(__file__).parent / "results"
FLOOR_KEYS = (FLOOR_DONE, FLOOR_LAST)
LIMITS_FAR_ABOVE = "rate=100000/s,100000000/d&rate.example.com=100000/s"


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float | None = None
    cpu_seconds: float | None = None  # the worker process's user + system time in the run

    def rate(self, count: int) -> float:
        return count / self.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the mailworker worker during its last run"
    )
    parser.add_argument(
        "--limiter-only", action="store_true", help="only the isolated rate-limiter scenario"
    )
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only the round-trip scenario (pipelining on/off through a delaying proxy)",
    )
    parser.add_argument(
        "--delay-ms", type=float, default=10.0, help="the proxy's delay each way (round trips)"
    )
    parser.add_argument("--chunking", action="store_true", help="the sink offers CHUNKING")
    parser.add_argument(
        "--campaign",
        type=int,
        default=100_000,
        help="recipients of the bulk campaign scenario (0 skips it)",
    )
    args = parser.parse_args()

    private = start_private_redis()
    sink, port, ca_file = start_sink(private.url, chunking=args.chunking)
    try:
        env = {
            "REDIS_URL": private.url,
            "SMTP_URL": f"smtp+starttls://{USER.replace('@', '%40')}:{PASSWORD}@127.0.0.1:{port}"
            f"?max_connections={args.concurrency}&max_messages=100000",
            "SMTP_CA_FILE": ca_file,
            "DEFAULT_FROM_EMAIL": "bench@example.com",
            "UNSUBSCRIBE_SECRET": "bench-unsubscribe-secret-of-32-bytes",
            "UNSUBSCRIBE_URL": "https://bench.example.com/unsubscribe",
        }
        os.environ.update(env)
        bench = Bench(env, redis.Redis.from_url(private.url), args)
        latency = _isolated("bench.latency", env, "--delay", str(args.delay_ms / 1000))
        if args.latency_only:
            print(json.dumps(latency))
            return
        limiter = _isolated("bench.limiter", env)
        if args.limiter_only:
            print(json.dumps(limiter))
            return
        results = bench.all()
        bulk = None
        if args.campaign:
            from bench.campaign import run as run_campaign

            bulk = run_campaign(env, bench.redis, args.campaign, args.concurrency)
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(10)
        private.stop()
    report(results, args, bulk, limiter, latency)


def start_sink(redis_url: str, chunking: bool = False) -> tuple[subprocess.Popen[str], str, str]:
    """The sink in its own process: the process, its port and its CA file."""
    certs = Path(tempfile.mkdtemp(prefix="mailworker-bench-"))
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.sink", "--redis", redis_url, "--certs", str(certs)]
        + (["--chunking"] if chunking else []),
        stdout=subprocess.PIPE,
        text=True,
    )
    _, port, ca_file = sink.stdout.readline().split()  # type: ignore[union-attr]
    return sink, port, ca_file


class Bench:
    def __init__(self, env: dict[str, str], client: redis.Redis, args: argparse.Namespace):
        self.env = env
        self.redis = client
        self.args = args
        self.offset = 0

    def all(self) -> dict[str, list[Run]]:
        results: dict[str, list[Run]] = {
            "baseline": [],
            "mailworker": [],
            "limited": [],
            "ceiling": [],
            "floor": [],
        }
        for index in range(self.args.runs):
            last = index == self.args.runs - 1
            results["baseline"].append(
                self.queued("bench.baseline", "bench-baseline", self._baseline_producer())
            )
            results["mailworker"].append(
                self.queued(
                    "mailworker.worker",
                    "email",
                    self._mailworker_producer(),
                    profile=self.args.profile and last,
                )
            )
            # Limits far above the send rate: what the Redis limiter itself costs.
            results["limited"].append(
                self.queued(
                    "mailworker.worker",
                    "email",
                    self._mailworker_producer(),
                    env={"SMTP_URL": self.env["SMTP_URL"] + "&" + LIMITS_FAR_ABOVE},
                )
            )
            results["ceiling"].append(self.ceiling())
            results["floor"].append(
                self.queued("bench.floor", "bench-floor", self._floor_producer(), keys=FLOOR_KEYS)
            )
            print(
                f"run {index + 1}: "
                + ", ".join(
                    f"{name} {runs[-1].rate(self.args.messages):.0f}/s"
                    for name, runs in results.items()
                ),
                file=sys.stderr,
            )
        return results

    def queued(
        self,
        app: str,
        queue: str,
        produce: Callable[[int], None],
        *,
        profile: bool = False,
        keys: tuple[str, str] = (COUNTER, LAST),
        env: dict[str, str] | None = None,
    ) -> Run:
        worker = subprocess.Popen(
            celery_worker_argv(queue, app=app, concurrency=self.args.concurrency, loglevel="ERROR"),
            env={**os.environ, **self.env, **(env or {})},
        )
        try:
            self._reset(keys)
            produce(1)  # warm-up: the worker is up and has imported everything
            self._wait_for(1, keys)
            self._reset(keys)
            spy = self._profile(worker.pid) if profile else None
            cpu = cpu_seconds(worker.pid)
            started = time.time()
            produce(self.args.messages)
            finished = self._wait_for(self.args.messages, keys)
            rss = _peak_rss_mb(worker.pid)
            used = cpu_seconds(worker.pid)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            spent = used - cpu if used is not None and cpu is not None else None
            return Run(finished - started, rss, spent)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)

    def ceiling(self) -> Run:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.ceiling",
                str(self.args.messages),
                str(self.args.concurrency),
            ],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=True,
        )
        return Run(float(out.stdout.strip()))

    def _baseline_producer(self) -> Callable[[int], None]:
        from bench.baseline import baseline_send

        def produce(count: int) -> None:
            for i in range(count):
                baseline_send.delay(f"reader{i}@example.com", f"baseline {i} t={time.time()}", "x")

        return produce

    def _floor_producer(self) -> Callable[[int], None]:
        from bench.floor import noop

        def produce(count: int) -> None:
            for i in range(count):
                noop.delay(f"reader{i}@example.com")

        return produce

    def _mailworker_producer(self) -> Callable[[int], None]:
        from mailworker.settings import reload_settings
        from mailworker.tasks import send_email
        from mailworker.tasks.app import configure_app

        configure_app(reload_settings())

        def produce(count: int) -> None:
            for i in range(count):
                subject = f"mailworker {i} t={time.time()}"  # the sink's latency sample
                send_email.delay(to=f"reader{i}@example.com", subject=subject, text="x")

        return produce

    def _reset(self, keys: tuple[str, str]) -> None:
        # Counters only grow; each scenario counts from where its counter stands now.
        time.sleep(0.02)
        self.offset = int(self.redis.get(keys[0]) or 0)

    def _wait_for(self, count: int, keys: tuple[str, str], timeout: float = 600) -> float:
        counter, last = keys
        deadline = time.monotonic() + timeout
        while int(self.redis.get(counter) or 0) - self.offset < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.redis.get(counter)} of {count} arrived")
            time.sleep(0.01)
        return float(self.redis.get(last) or time.time())

    def _profile(self, pid: int) -> subprocess.Popen[bytes] | None:
        RESULTS.mkdir(exist_ok=True)
        try:
            return subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--output",
                    str(RESULTS / "profile.txt"),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            print("py-spy not installed; skipping the profile", file=sys.stderr)
            return None


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _paired(a: list[Run], b: list[Run], count: int) -> str:
    return ", ".join(f"{x.rate(count) / y.rate(count):.2f}x" for x, y in zip(a, b, strict=True))


def _isolated(module: str, env: dict[str, str], *argv: str) -> dict[str, Any]:
    """Run a single-process scenario (``bench.limiter``, ``bench.latency``); its JSON."""
    out = subprocess.run(
        [sys.executable, "-m", module, *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(
    results: dict[str, list[Run]],
    args: argparse.Namespace,
    bulk: Any = None,
    limiter: dict[str, Any] | None = None,
    latency: dict[str, Any] | None = None,
) -> None:
    count = args.messages
    median = {
        name: statistics.median(r.rate(count) for r in runs) for name, runs in results.items()
    }
    rss = {name: max((r.peak_rss_mb or 0) for r in runs) for name, runs in results.items()}
    cpu = {
        name: statistics.median(1000 * r.cpu_seconds / count for r in runs if r.cpu_seconds)
        if any(r.cpu_seconds for r in runs)
        else None
        for name, runs in results.items()
    }
    lines = [
        f"{count} messages, {args.runs} runs (median), worker concurrency {args.concurrency}, "
        f"`threads` pool, STARTTLS + AUTH sink on loopback",
        "",
        "| scenario | messages/s | vs baseline | vs ceiling | worker peak RSS | "
        "worker CPU s / 1000 msgs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {
        "baseline": "Celery task + smtplib, connection per message (baseline)",
        "mailworker": "mailworker (`send_email.delay`, pooled connections)",
        "limited": "mailworker with rate limits far above the send rate",
        "ceiling": "raw aiosmtplib, persistent connections, no queue (ceiling)",
        "floor": "Celery task that sends nothing, same settings (queue floor)",
    }
    for name in ("baseline", "mailworker", "limited", "ceiling", "floor"):
        memory = f"{rss[name]:.0f} MB" if rss[name] else "-"
        spent = cpu[name]
        used = f"{spent:.2f} ({spent / cpu['baseline']:.2f}x)" if spent and cpu["baseline"] else "-"
        lines.append(
            f"| {names[name]} | {median[name]:.0f} | "
            f"{median[name] / median['baseline']:.2f}x | "
            f"{median[name] / median['ceiling']:.0%} | {memory} | {used} |"
        )
    lines += [
        "",
        f"Rate limiter overhead: mailworker with limits runs at "
        f"{median['limited'] / median['mailworker']:.2f}x mailworker without "
        f"(paired runs: {_paired(results['limited'], results['mailworker'], count)}).",
    ]
    if limiter is not None:
        lines.append(
            f"On the delivery path alone (`bench/limiter.py`, no Celery, 9 alternating rounds "
            f"of 1000): {limiter['with']:.0f}/s with limits vs {limiter['without']:.0f}/s "
            f"without, {limiter['ratio']:.2f}x "
            f"({', '.join(f'{r:.2f}x' for r in limiter['ratios'])})."
        )
    if latency is not None:
        lines += ["", _latency_lines(latency, args.chunking)]
    if bulk is not None:
        lines += [
            "",
            f"Bulk campaign, {bulk.recipients} recipients, one `bulk` worker (concurrency "
            f"{args.concurrency}):",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| campaign messages/s | {bulk.rate:.0f} |",
            f"| vs baseline (connection per message) | {bulk.rate / median['baseline']:.2f}x |",
            f"| vs transactional mailworker | {bulk.rate / median['mailworker']:.2f}x |",
            f"| producer peak RSS, {bulk.recipients} / {bulk.recipients // 10} recipients | "
            f"{bulk.producer_rss_mb:.0f} MB / {bulk.producer_rss_small_mb:.0f} MB |",
            f"| Redis bytes per queued recipient | {bulk.redis_bytes_per_recipient:.0f} |",
            f"| transactional latency p50 / p99, idle | {bulk.latency_idle[0] * 1000:.0f} ms / "
            f"{bulk.latency_idle[1] * 1000:.0f} ms |",
            f"| transactional latency p50 / p99, during the campaign | "
            f"{bulk.latency_during[0] * 1000:.0f} ms / {bulk.latency_during[1] * 1000:.0f} ms |",
            f"| bulk worker CPU s / 1000 messages | "
            f"{bulk.cpu_per_1000 if bulk.cpu_per_1000 is not None else float('nan'):.2f} |",
        ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(text + "\n")


def _latency_lines(latency: dict[str, Any], chunking: bool) -> str:
    per = latency["connections"]
    return (
        f"Round trips (`bench/latency.py`, {latency['rtt_ms']:.0f} ms RTT proxy, {per} "
        f"connections, delivery path without Celery): PIPELINING {latency['pipelined']:.0f}/s "
        f"({latency['pipelined'] / per:.1f}/s per connection), lock-step "
        f"{latency['lockstep']:.0f}/s ({latency['lockstep'] / per:.1f}/s per connection): "
        f"{latency['ratio']:.2f}x; {latency['of_ideal']:.0%} of the ideal "
        f"connections / (2 x RTT) = {latency['ideal']:.0f}/s, "
        f"{latency['of_measured_ideal']:.0%} of it at the round trip a session measures "
        f"(NOOP median {latency['measured_rtt_ms']:.1f} ms: proxy and server turnaround)."
        + (
            f" With CHUNKING offered: {latency['chunked']:.0f}/s, "
            f"{latency['chunked_vs_piped']:.2f}x PIPELINING alone, "
            f"{latency['chunked_of_one_rtt_ideal']:.0%} of connections / RTT."
            if chunking
            else ""
        )
    )


if __name__ == "__main__":
    main()
