"""A worker SIGKILLed at each named step of a job's life (delivery.crashpoint): every
message arrives, a second copy only when the kill fell between the server's 250 and the
sent-ledger write (RFC 1047), and each job is back within the visibility timeout plus one
lease. For a transactional job, a retried job, a scheduled job and a campaign batch.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailworker.delivery.crashpoint import STEPS
from mailworker.dev.devserver import DevServer, RecordingSMTP, Reply
from mailworker.store import broker, keys
from mailworker.store.client import get_redis
from mailworker.store.status import status
from mailworker.tasks import send_email
from mailworker.tasks.campaign import campaign_status, start_campaign
from tests.helpers import extra_account, wait_for_status, wait_until, worker_process

VISIBILITY = 10  # REDIS_VISIBILITY_TIMEOUT for these workers
LEASE = 4  # JOB_LEASE_SECONDS (conftest)
REAPER = 5  # worker.housekeeping.REAP_INTERVAL
STARTUP = 8  # a worker process's start on a loaded two-core machine
CASES = [
    (kind, step) for kind in ("transactional", "retried", "scheduled", "campaign") for step in STEPS
]


@pytest.fixture
def crash_server(server: DevServer) -> Iterator[DevServer]:
    tried: set[str] = set()

    def once_busy(command: str, argument: object, _: RecordingSMTP) -> Reply | None:
        # A retried job's first attempt gets a 451 naming a wait long enough to stop the
        # worker that saw it before the retry is due.
        if command == "RCPT" and "retry@" in str(argument) and "retry" not in tried:
            tried.add("retry")
            return Reply("451 4.3.0 Temporary failure, try again in 4 seconds")
        return None

    server.fault = once_busy
    yield server


def _url(server: DevServer) -> str:
    # One session (and a one-thread worker): the RFC 1047 window is per session, so one
    # kill can catch at most one unrecorded 250. With N sessions in flight, up to N.
    return server.url() + "?max_connections=1"


def _env(server: DevServer, **extra: str) -> dict[str, str]:
    return {
        "SMTP_URL_CRASH": _url(server),
        "REDIS_VISIBILITY_TIMEOUT": str(VISIBILITY),
        **extra,
    }


def _enqueue(kind: str, queue: str, server: DevServer) -> tuple[str, str]:
    """Queue one job of ``kind``; ``(job or campaign id, the queue its task is on)``."""
    if kind == "campaign":
        rows = [{"email": f"c{i}@example.com"} for i in range(3)]
        template = {"subject": "Hi", "text": "Hello"}
        return start_campaign(template, rows, account="crash", campaign_id=queue), "bulk"
    to = "retry@example.com" if kind == "retried" else "ann@example.com"
    send_at = time.time() + 2 if kind == "scheduled" else None
    result = send_email.apply_async(
        kwargs={"to": to, "subject": "s", "text": "t", "account": "crash", "send_at": send_at},
        queue=queue,
    )
    if kind == "retried":  # its first attempt, by a worker that then stops
        with worker_process(queue, _env(server)):
            wait_for_status(result.id, "deferred", timeout=30)
    return result.id, queue


def _copies(server: DevServer, kind: str, job_id: str) -> Counter[str]:
    if kind == "campaign":
        marker = f"<{job_id}-".encode()
        return Counter(m.rcpt_tos[0] for m in server.messages if marker in m.data)
    return Counter(str(m.message["Message-ID"]) for m in server.messages)


def _delivered(kind: str, job_id: str) -> bool:
    if kind == "campaign":
        found = campaign_status(job_id) or {}
        return found.get("sent") == 3
    return (status(job_id) or {}).get("state") == "sent"


def _no_copy_left(queue: str, job_id: str) -> bool:
    """Nothing of the job is left to run again: not queued, not in a worker's hands."""
    client = get_redis()
    in_hand = {i for i in broker.task_ids_in_hand(client) if i.startswith(job_id)}
    return client.llen(keys.queue_key(queue)) == 0 and not in_hand


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize(("kind", "step"), CASES)
def test_a_worker_killed_at_each_step_loses_nothing(
    crash_server: DevServer, environment: dict[str, str], tmp_path: Path, kind: str, step: str
) -> None:
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    crash = {"MAILWORKER_CRASH_AT": step, "MAILWORKER_CRASH_ONCE": str(tmp_path / "crashed")}
    with extra_account("crash", _url(crash_server)):
        job_id, task_queue = _enqueue(kind, queue, crash_server)
        with worker_process(task_queue, _env(crash_server, **crash), concurrency=1) as doomed:
            assert _wait_for_death(doomed) == -signal.SIGKILL
        killed = time.monotonic()
        assert (tmp_path / "crashed").read_text() == step
        with worker_process(task_queue, _env(crash_server)):
            wait_until(lambda: _delivered(kind, job_id), VISIBILITY + LEASE + 30, "delivered")
            recovered = time.monotonic() - killed
            # A stale copy kombu restores after the visibility timeout does nothing.
            wait_until(lambda: _no_copy_left(task_queue, job_id), VISIBILITY + 30, "drained")
    copies = _copies(crash_server, kind, job_id)
    assert len(copies) == (3 if kind == "campaign" else 1)  # nothing lost
    twice = [key for key, count in copies.items() if count > 1]
    assert set(copies.values()) <= {1, 2}
    assert len(twice) <= (1 if step == "accepted" else 0), (step, copies)
    print(f"recovery {kind} {step}: {recovered:.1f} s")  # shown with -s: README's numbers
    if step == "taken":  # kombu restores the message after the visibility timeout
        assert recovered < VISIBILITY + 10 + STARTUP + REAPER
    else:  # the lease lapses and the reaper returns the job
        assert recovered < LEASE + REAPER + STARTUP


def _wait_for_death(process: subprocess.Popen[bytes]) -> int:
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        raise AssertionError("the worker never reached its crash point") from None
