"""Small waiting and lookup helpers shared by the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mailworker.dev.devserver import DevServer, ReceivedMessage
from mailworker.settings import reload_settings
from mailworker.tasks import send_email, status
from mailworker.worker.commands import celery_worker_argv


def wait_for_status(job_id: str, *states: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll the job's status record until its state is one of ``states``."""
    deadline = time.monotonic() + timeout
    record = None
    while time.monotonic() < deadline:
        record = status(job_id)
        if record and record["state"] in states:
            return record
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}; last status: {record}")


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``predicate`` until it is true; the seconds that took. A deadline, not a sleep."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def messages_of(server: DevServer, job_id: str) -> list[ReceivedMessage]:
    return [m for m in server.messages if job_id.encode() in m.data.split(b"\r\n\r\n")[0]]


@contextmanager
def extra_account(name: str, url: str) -> Iterator[None]:
    """Configure ``SMTP_URL_<NAME>`` for the duration of a test (producer and in-process worker)."""
    variable = f"SMTP_URL_{name.upper()}"
    os.environ[variable] = url
    reload_settings()
    try:
        yield
    finally:
        del os.environ[variable]
        reload_settings()


def send_many(count: int, account: str, *, queue: str | None = None, **extra: Any) -> list[str]:
    """Queue ``count`` one-recipient messages (on ``queue``, default the transactional one)."""
    return [
        send_email.apply_async(
            kwargs={
                "to": f"reader{i}@example.com",
                "subject": f"n{i}",
                "text": "x",
                "account": account,
                **extra,
            },
            queue=queue,
        ).id
        for i in range(count)
    ]


def wait_all_sent(job_ids: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for job_id in job_ids:
        wait_for_status(job_id, "sent", timeout=max(0.1, deadline - time.monotonic()))


@contextmanager
def worker_process(
    queue: str,
    env: dict[str, str],
    *,
    pool: str = "threads",
    concurrency: int = 4,
    name: str = "",
    loglevel: str = "WARNING",
    log_file: Any = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery -A mailworker.worker worker`` process consuming ``queue``; killed if
    left running."""
    hostname = f"{queue}{name}-{os.getpid()}@%h"
    argv = celery_worker_argv(
        queue, pool=pool, concurrency=concurrency, hostname=hostname, loglevel=loglevel
    )
    process = subprocess.Popen(argv, env={**os.environ, **env}, stderr=log_file)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


_PRODUCE = """
import json, sys
from mailworker.tasks import send_email
queue, jobs = sys.argv[1], json.loads(sys.argv[2])
print(json.dumps([send_email.apply_async(kwargs=k, queue=queue).id for k in jobs]))
"""


def produce_elsewhere(env: dict[str, str], account: str, queue: str, count: int) -> list[str]:
    """Queue ``count`` messages from a producer process of its own with ``env`` (e.g. a
    REDIS_URL other than the tests' Redis); return the job ids."""
    jobs = [
        {"to": f"r{i}@example.com", "subject": "s", "text": "t", "account": account}
        for i in range(count)
    ]
    return send_elsewhere(env, queue, jobs)


def send_elsewhere(env: dict[str, str], queue: str, jobs: list[dict[str, Any]]) -> list[str]:
    """``send_email`` each of ``jobs`` (keyword arguments) from a producer process with
    ``env``; return the job ids."""
    produced = subprocess.run(
        [sys.executable, "-c", _PRODUCE, queue, json.dumps(jobs)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert produced.returncode == 0, produced.stderr
    return list(json.loads(produced.stdout))


def states_when_sent(client: Any, job_ids: list[str], timeout: float = 60) -> list[str]:
    """Wait (reading job records through ``client``) until every job is sent; their states."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all((status(j, client=client) or {}).get("state") == "sent" for j in job_ids):
            break
        time.sleep(0.2)
    return [(status(j, client=client) or {}).get("state", "") for j in job_ids]
