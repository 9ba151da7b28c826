"""Redis commands per transactional message, and throughput, before and after, in one run.

    python -m bench.commands --messages 500 --before f7aa724

Each side (the working tree, and optionally an earlier commit checked out beside it) runs
its own producer and ``celery -A mailworker.worker`` against one private Redis and one
in-process STARTTLS + AUTH sink (which counts in memory: no Redis noise). ``MONITOR``
from the first message until the last job has settled counts the commands of every client
(producer, kombu, Celery, mailworker) per message: those a client sent, and those Lua
scripts ran inside them; with Celery's task events on (the default) and off.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from mailworker.dev.devredis import start_private_redis
from mailworker.dev.devserver import DevServer
from mailworker.worker.commands import celery_worker_argv

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("settings", "store", "observe", "delivery", "feedback", "tasks", "worker", "cli", "dev")
USER, PASSWORD = "bench@example.com", "bench-password"
_PRODUCE = """
import sys
from mailworker.tasks import send_email
for i in range(int(sys.argv[1])):
    send_email.delay(to=f"reader{i}@example.com", subject=f"n{i}", text="x")
"""


def importable(tree: Path, into: Path) -> Path:
    """A directory that imports ``tree`` as ``mailworker`` (the repository's folders are
    mapped to subpackages at install time; this maps them with links instead)."""
    package = into / "mailworker"
    package.mkdir(parents=True)
    for file in (tree / "mailworker").glob("*.py"):
        (package / file.name).symlink_to(file)
    for part in PARTS:
        (package / part).symlink_to(tree / part)
    return into


def checkout(ref: str, into: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), ref],
        check=True,
        capture_output=True,
    )
    return into


class Monitor:
    """Every command Redis executes while it runs, split into those a client sent (round
    trips' worth) and those a Lua script ran inside one of them."""

    def __init__(self, client: redis.Redis) -> None:
        self.sent: Counter[str] = Counter()
        self.in_scripts: Counter[str] = Counter()
        self._client = client
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop = threading.Event()

    def __enter__(self) -> Monitor:
        self._thread.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._client.ping()  # one more line, so the reader wakes and sees the stop
        self._thread.join(10)

    def _run(self) -> None:
        with self._client.monitor() as monitor:
            for line in monitor.listen():
                if self._stop.is_set():
                    return
                name = str(line.get("command", "")).split(" ")[0].lower()
                if name in ("info", "ping", "monitor"):
                    continue
                kind = self.in_scripts if line.get("client_type") == "lua" else self.sent
                kind[name] += 1


def side(
    path: Path, env: dict[str, str], client: redis.Redis, sink: DevServer, count: int
) -> dict[str, Any]:
    environ = {**os.environ, **env, "PYTHONPATH": str(path)}
    worker = subprocess.Popen(
        celery_worker_argv("email", concurrency=8, loglevel="ERROR"), env=environ, cwd=path
    )
    try:
        produce = [sys.executable, "-c", _PRODUCE]
        subprocess.run([*produce, "1"], env=environ, cwd=path, check=True)  # warm-up
        _wait(lambda: len(sink.messages) >= 1)
        _settled(client)
        sink.messages.clear()
        started = time.monotonic()  # throughput first: MONITOR itself slows Redis down
        subprocess.run([*produce, str(count)], env=environ, cwd=path, check=True)
        _wait(lambda: len(sink.messages) >= count)
        seconds = time.monotonic() - started
        _settled(client)
        sink.messages.clear()
        with Monitor(redis.Redis.from_url(env["REDIS_URL"])) as seen:
            subprocess.run([*produce, str(count)], env=environ, cwd=path, check=True)
            _wait(lambda: len(sink.messages) >= count)
            _settled(client)
        return {
            "sent": sum(seen.sent.values()) / count,
            "in_scripts": sum(seen.in_scripts.values()) / count,
            "top": seen.sent.most_common(8),
            "rate": count / seconds,
        }
    finally:
        worker.terminate()
        worker.wait(30)


def _settled(client: redis.Redis) -> None:
    """Every job's last write done: the queue, kombu's unacked hash and the leases empty."""
    _wait(
        lambda: (
            client.llen("mailworker:celery:email") == 0
            and client.hlen("mailworker:celery:unacked") == 0
            and client.zcard("mailworker:jobs:leased") == 0
        )
    )
    time.sleep(0.3)


def _wait(condition: Any, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark's messages did not all arrive")
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--before", help="a git ref to measure beside the working tree")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mailworker-commands-"))
    private = start_private_redis()
    sink = DevServer(tls="starttls", users={USER: PASSWORD}, certificate_dir=work).start()
    client = redis.Redis.from_url(private.url)
    url = f"smtp+starttls://{USER.replace('@', '%40')}:{PASSWORD}@127.0.0.1:{sink.port}"
    env = {
        "REDIS_URL": private.url,
        "SMTP_URL": f"{url}?max_connections=8&max_messages=100000",
        "SMTP_CA_FILE": str(sink.ca_file),
        "DEFAULT_FROM_EMAIL": "bench@example.com",
    }
    sides = {}
    if args.before:
        sides["before"] = importable(checkout(args.before, work / "tree"), work / "before")
    sides["after"] = importable(ROOT, work / "after")
    rows = []
    try:
        for name, path in sides.items():
            for events in ("true", "false"):
                found = side(path, {**env, "CELERY_EVENTS": events}, client, sink, args.messages)
                rows.append((name, events, found))
                print(name, events, found, file=sys.stderr)
    finally:
        sink.stop()
        private.stop()
        if args.before:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(work / "tree")], check=False)  # fmt: skip
    print(f"{args.messages} messages, worker concurrency 8, loopback sink\n")
    print(
        "| code | task events | commands sent / message | run inside scripts / message "
        "| messages/s | commands sent, most first |"
    )
    print("|---|---|---:|---:|---:|---|")
    for name, events, found in rows:
        top = ", ".join(f"{k} {v / args.messages:.1f}" for k, v in found["top"])
        print(
            f"| {name} | {'on' if events == 'true' else 'off'} | {found['sent']:.1f} "
            f"| {found['in_scripts']:.1f} | {found['rate']:.0f} | {top} |"
        )


if __name__ == "__main__":
    main()
