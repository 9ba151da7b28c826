"""``mailworker demo``: the whole data path, for real, on one machine.

Redis (yours at REDIS_URL, or a private one) → a Celery worker process → a local SMTP server
that requires STARTTLS and AUTH. Sends a few messages with ``send_email.delay()`` and shows
what the server received.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from mailworker.dev.devredis import RedisUnavailable, answers, start_private_redis
from mailworker.dev.devserver import DevServer
from mailworker.settings import DEFAULT_REDIS_URL, reload_settings
from mailworker.store.client import reset_redis
from mailworker.tasks.app import configure_app
from mailworker.worker.commands import celery_worker_argv


def run_demo(console: Console, count: int) -> int:
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    private = None
    if not answers(redis_url):
        try:
            private = start_private_redis()
        except RedisUnavailable as exc:
            console.print(f"[red]{exc}[/]")
            return 2
        redis_url = private.url
        console.print(f"No Redis at REDIS_URL; started a private one at {redis_url}")
    workdir = Path(tempfile.mkdtemp(prefix="mailworker-demo-"))
    server = DevServer(
        tls="starttls",
        users={"demo@example.com": secrets.token_urlsafe(12)},
        certificate_dir=workdir,
    ).start()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SMTP_URL": server.url(),
        "SMTP_CA_FILE": str(server.ca_file),
        "DEFAULT_FROM_EMAIL": "Demo <demo@example.com>",
        "ALLOW_LOCAL_DOMAINS": "true",  # a local server: root@localhost and *.test welcome
    }
    os.environ.update(env)
    configure_app(reload_settings())
    reset_redis()
    console.print(f"SMTP server with STARTTLS + AUTH on {server.host}:{server.port}")
    worker = subprocess.Popen(
        celery_worker_argv("email", hostname=f"demo-{os.getpid()}@%h", quiet=True),
        # Celery warns when it runs as root (a container, CI); the demo's worker is a
        # throwaway on a private server, and the warning would be its only noise.
        env={**env, "PYTHONWARNINGS": "ignore:You're running the worker with superuser"},
    )
    try:
        return _send_and_show(console, server, count)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        server.stop()
        if private is not None:
            private.stop()


def _send_and_show(console: Console, server: DevServer, count: int) -> int:
    from mailworker.tasks import send_email

    job_ids = []
    for i in range(1, count + 1):
        result = send_email.delay(
            to=f"reader{i}@example.com",
            subject=f"Hello from mailworker #{i}",
            text=f"Message {i}: queued in Redis, sent by a Celery worker over STARTTLS.",
            html=f"<p>Message <b>{i}</b> from the mailworker demo.</p>",
        )
        job_ids.append(result.id)
    console.print(f"Queued {count} messages with send_email.delay(); waiting for the worker...")
    deadline = time.monotonic() + 60
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("delivering", total=count)
        while len(server.messages) < count and time.monotonic() < deadline:
            progress.update(bar, completed=len(server.messages))
            time.sleep(0.1)
    received = server.messages
    table = Table(title="What the SMTP server received")
    for column in ("to", "subject", "TLS", "AUTH user", "Message-ID"):
        table.add_column(column)
    for message in received:
        parsed = message.message
        table.add_row(
            ", ".join(message.rcpt_tos),
            str(parsed["Subject"]),
            "yes" if message.tls else "NO",
            message.user or "-",
            str(parsed["Message-ID"]),
        )
    console.print(table)
    if len(received) < count:
        console.print(f"[red]only {len(received)} of {count} arrived within 60 s[/]")
        return 1
    console.print(
        f"[green]All {count} messages delivered over {server.log.connections} "
        f"pooled connection(s).[/] Check one with: mailworker status {job_ids[0]}"
    )
    return 0
