"""The benchmark's SMTP sink: STARTTLS + AUTH, counting accepted messages in Redis.

Runs in its own process so its CPU does not share a GIL with the driver. Prints
``READY <port> <ca_file>`` when it accepts connections.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
from pathlib import Path

import redis

from mailworker.dev.devserver import DevServer, ReceivedMessage

USER, PASSWORD = "bench@example.com", "bench-password"
COUNTER, LAST = "bench:received", "bench:last_accepted"
# Seconds from the producer's delay() (t=<time> in the subject) to the 250, and sessions.
LATENCIES, CONNECTIONS = "bench:latencies", "bench:connections"
_SENT_AT = re.compile(rb"^Subject: .*\bt=(\d+\.\d+)", re.MULTILINE)
# Written by bench.floor's no-op task instead of the sink.
FLOOR_DONE, FLOOR_LAST = "bench:floor_done", "bench:floor_last"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--certs", required=True, type=Path)
    parser.add_argument("--chunking", action="store_true", help="offer CHUNKING (BDAT)")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    received = {"count": 0, "last": 0.0}
    latencies: list[float] = []

    def count(message: ReceivedMessage) -> None:
        # In memory only: a Redis write per message would tax the very path being measured.
        received["count"] += 1
        received["last"] = time.time()
        sent_at = _SENT_AT.search(message.data[:2048])
        if sent_at:
            latencies.append(message.received_at - float(sent_at.group(1)))

    def publish_counts() -> None:
        while True:
            client.set(COUNTER, received["count"])
            client.set(LAST, repr(received["last"]))
            client.set(CONNECTIONS, server.log.connections)
            if latencies:
                taken = latencies[:]
                del latencies[: len(taken)]
                client.rpush(LATENCIES, *taken)
            time.sleep(0.005)

    server = DevServer(
        tls="starttls",
        users={USER: PASSWORD},
        certificate_dir=args.certs,
        on_message=count,
        chunking=args.chunking,
    ).start()
    threading.Thread(target=publish_counts, daemon=True).start()
    print(f"READY {server.port} {server.ca_file}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    print(f"CONNECTIONS {server.log.connections}", file=sys.stderr, flush=True)
    server.stop()


if __name__ == "__main__":
    main()
