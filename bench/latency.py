"""Round trips, not CPU: the delivery path through a proxy that adds network latency.

One process, one :class:`~worker.runtime.Runtime` (no Celery), the sink of ``make bench``
behind ``bench.proxy`` (10 ms each way by default, a 20 ms round trip): single-recipient
messages over pooled connections, alternately with PIPELINING on and off. Prints JSON with
the median rates, their ratio and the ideal ``connections / (2 x RTT)`` of a pipelined
dialogue (envelope + DATA, then the message).

    python -m bench.latency   (run by ``python -m bench``; needs its environment)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

from bench.limiter import send_round
from mailworker.delivery.connection import open_connection
from mailworker.delivery.runtime import Runtime
from mailworker.delivery.tls import account_tls_context
from mailworker.settings import Settings, SmtpAccount, load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=0.010, help="seconds, each direction")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--messages", type=int, default=200, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    sink = urlsplit(os.environ["SMTP_URL"])
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.proxy",
            "--target",
            f"{sink.hostname}:{sink.port}",
            "--delay",
            str(args.delay),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(proxy.stdout.readline().split()[1])  # type: ignore[union-attr]
        userinfo = sink.netloc.rpartition("@")[0]
        query = f"max_connections={args.connections}&max_messages=100000&idle_check=60"
        proxied = sink._replace(netloc=f"{userinfo}@127.0.0.1:{port}", query=query)
        settings = load_settings(
            {
                **os.environ,
                "SMTP_URL_CHUNKED": f"{urlunsplit(proxied)}&pipelining=on&chunking=on",
                "SMTP_URL_PIPED": f"{urlunsplit(proxied)}&pipelining=on&chunking=off",
                "SMTP_URL_LOCKSTEP": f"{urlunsplit(proxied)}&pipelining=off",
            }
        )
        rates = _measure(settings, args)
        noop_rtt = _noop_round_trip(settings.account("piped"), settings)
    finally:
        proxy.terminate()
        proxy.wait(10)
    rtt = 2 * args.delay
    ideal = args.connections / (2 * rtt)
    measured_ideal = args.connections / (2 * noop_rtt)
    piped, lockstep = statistics.median(rates["piped"]), statistics.median(rates["lockstep"])
    chunked = statistics.median(rates["chunked"])
    print(
        json.dumps(
            {
                "rtt_ms": rtt * 1000,
                "connections": args.connections,
                # With a sink offering CHUNKING: one round trip a message (else as piped).
                "chunked": chunked,
                "chunked_vs_piped": statistics.median(
                    c / p for c, p in zip(rates["chunked"], rates["piped"], strict=True)
                ),
                "chunked_of_one_rtt_ideal": chunked / (args.connections / rtt),
                "chunked_of_measured_one_rtt_ideal": chunked / (args.connections / noop_rtt),
                "pipelined": piped,
                "lockstep": lockstep,
                "ratio": statistics.median(  # paired rounds
                    p / s for p, s in zip(rates["piped"], rates["lockstep"], strict=True)
                ),
                "ideal": ideal,
                "of_ideal": piped / ideal,
                "measured_rtt_ms": noop_rtt * 1000,
                "of_measured_ideal": piped / measured_ideal,
            }
        )
    )


def _measure(settings: Settings, args: argparse.Namespace) -> dict[str, list[float]]:
    """Messages/s per round for each account, the two alternating round by round."""
    runtime = Runtime()
    rates: dict[str, list[float]] = {"chunked": [], "piped": [], "lockstep": []}
    try:
        for account in rates:  # open and warm every connection first
            send_round(runtime, settings, account, args.connections * 2)
        for _ in range(args.rounds):
            for account in rates:
                rates[account].append(send_round(runtime, settings, account, args.messages))
    finally:
        runtime.close()
    return rates


def _noop_round_trip(account: SmtpAccount, settings: Settings, samples: int = 21) -> float:
    """The round trip a session really sees through the proxy: the median NOOP, in seconds."""

    async def measure() -> float:
        context = account_tls_context(account, settings.smtp_ca_file)
        smtp = await open_connection(account, context, timeout=settings.smtp_timeout)
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            await smtp.noop()
            times.append(time.perf_counter() - started)
        await smtp.quit()
        return statistics.median(times)

    return asyncio.run(measure())


if __name__ == "__main__":
    main()
