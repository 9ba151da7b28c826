"""The priority lane: ``priority="high"`` jobs overtake a backlog on the same workers, and
the backlog still drains (a real worker process, a real TLS + AUTH server)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailworker.dev.devserver import DevServer, Reply
from mailworker.tasks import InvalidEmail, send_email
from mailworker.tasks.app import PRIORITY_QUEUE, app
from tests.helpers import extra_account, send_many, wait_until, worker_process

BACKLOG = 500


@pytest.fixture
def busy_server(server: DevServer) -> Iterator[DevServer]:
    """A server that takes 6 ms per message (its loop blocked): about 160 messages/s at
    most, so a backlog of 500 lasts seconds whatever the workers do."""

    def slow(command: str, argument: Any, session: Any) -> Reply | None:
        if command == "DATA":
            time.sleep(0.006)
        return None

    server.fault = slow
    yield server


def test_a_high_priority_job_overtakes_a_backlog_and_the_backlog_still_drains(
    environment: dict[str, str], busy_server: DevServer
) -> None:
    with extra_account("lane", busy_server.url()):
        env = {**environment, "SMTP_URL_LANE": busy_server.url()}
        host = [f"email-lane-{os.getpid()}@{socket.gethostname()}"]
        # Started with "-Q email" only: the worker adds the lane itself.
        with worker_process("email", env, concurrency=8, name="-lane"):
            wait_until(lambda: app.control.ping(destination=host, timeout=0.5), 30, "worker up")
            [queues] = app.control.inspect(destination=host).active_queues().values()
            assert {q["name"] for q in queues} >= {"email", PRIORITY_QUEUE}
            backlog = send_many(BACKLOG, "lane")
            wait_until(lambda: len(busy_server.messages) >= 20, 30, "the worker busy")
            started = time.monotonic()
            urgent = send_email.delay(
                to="urgent@example.com", subject="Your code", text="123456", account="lane",
                priority="high",
            )  # fmt: skip
            took = wait_until(
                lambda: any(urgent.id.encode() in m.data for m in busy_server.messages),
                1.0,
                "the high-priority job delivered within 1 s",
            )
            behind = BACKLOG - (len(busy_server.messages) - 1)
            # At 160/s at most, 200 jobs ahead would take over 1.2 s: the lane overtook them.
            assert behind >= 200, f"only {behind} normal jobs were still waiting: no backlog"
            print(f"high-priority job delivered in {took:.3f} s with {behind} jobs queued")
            assert time.monotonic() - started <= 1.0
            wait_until(lambda: len(busy_server.messages) == BACKLOG + 1, 60, "backlog drained")
    received = {m.rcpt_tos[0] for m in busy_server.messages}
    assert len(received) == BACKLOG + 1 and len(backlog) == BACKLOG


def test_priority_takes_normal_or_high_only() -> None:
    with pytest.raises(InvalidEmail, match='expected "normal" or "high"'):
        send_email.delay(to="a@example.com", subject="s", text="x", priority="urgent")
