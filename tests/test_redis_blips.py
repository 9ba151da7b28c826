"""A Redis blip costs seconds, not jobs; a failed enqueue leaves nothing behind.

Real parts: a private redis-server for the blip (every client connection is killed, as a
network blip or a Sentinel failover does), a real ``celery worker`` process, a real TLS +
AUTH SMTP server.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from mailworker import QueueUnavailable, send_email
from mailworker.dev.devredis import PrivateRedis, start_private_redis
from mailworker.dev.devserver import DevServer
from mailworker.store import keys
from mailworker.store.stats import account_counts
from mailworker.tasks import status
from tests.helpers import extra_account, send_elsewhere, wait_until, worker_process


@pytest.fixture
def blip_redis() -> Iterator[PrivateRedis]:
    server = start_private_redis()
    yield server
    server.stop()


def _kill_every_client(url: str) -> int:
    client = redis_lib.Redis.from_url(url)
    try:
        return int(client.client_kill_filter(_type="normal", skipme=True))
    finally:
        client.close()


def test_every_client_connection_killed_twice_during_a_drain_loses_and_doubles_nothing(
    server: DevServer, blip_redis: PrivateRedis, environment: dict[str, str], tmp_path: Path
) -> None:
    env = {**environment, "REDIS_URL": blip_redis.url, "SMTP_URL_BLIP": server.url()}
    jobs = [
        {"to": f"blip{i}@example.com", "subject": f"b{i}", "text": "x", "account": "blip"}
        for i in range(300)
    ]
    job_ids = send_elsewhere(env, "blips", jobs)
    killed: list[tuple[float, int]] = []

    def blips() -> None:
        for after in (60, 180):
            while len(server.messages) < after:
                time.sleep(0.01)
            killed.append((time.monotonic(), _kill_every_client(blip_redis.url)))

    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log, worker_process("blips", env, concurrency=8, log_file=log):
        killer = threading.Thread(target=blips, daemon=True)
        killer.start()
        deadline = time.monotonic() + 120
        while len(server.messages) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        done = time.monotonic()
        # No second copy can still come: nothing queued, taken or deferred is left.
        client = redis_lib.Redis.from_url(blip_redis.url, decode_responses=True)
        wait_until(
            lambda: (
                client.llen(keys.queue_key("blips")) == 0
                and client.hlen(f"{keys.CELERY_PREFIX}unacked") == 0
                and client.zcard(keys.JOBS_DUE) == 0
                and client.zcard(keys.JOBS_QUEUED) == 0
                and client.zcard(keys.JOBS_LEASED) == 0
            ),
            30,
            "the worker's queue, unacked set and the lifecycle's indexes drained",
        )
    ids = Counter(str(m.message["Message-ID"]) for m in server.messages)
    assert len(killed) == 2 and all(count > 0 for _, count in killed)
    log_tail = log_path.read_text(errors="replace")[-3000:]
    assert len(ids) == 300 and set(ids.values()) == {1}, (ids.most_common(3), log_tail)
    # Recovered within seconds: a message kombu loses in the blip (taken from the queue,
    # not yet in its unacked set) is found by the reaper once its queue has moved past it
    # (LOST_MESSAGE_AFTER_SECONDS, 8 s here, plus a reaper round of 5 s); a job whose
    # worker lost Redis mid-attempt comes back one lease (4 s) later.
    assert done - killed[-1][0] < 8 + 5 + 10
    states = {(status(j, client=client) or {}).get("state") for j in job_ids}
    assert states == {"sent"}
    assert account_counts(["blip"], client=client)["blip"]["sent"] == 300


@pytest.mark.usefixtures("environment")
def test_a_failed_enqueue_frees_its_idempotency_key(
    server: DevServer, redis: redis_lib.Redis
) -> None:
    queue = "idem-broken"
    broken = keys.queue_key(queue)
    redis.set(broken, "not a list")  # the broker's LPUSH fails with WRONGTYPE
    kwargs = {"to": "idem@example.com", "subject": "s", "text": "t", "idempotency_key": "o-42"}
    with extra_account("idem", server.url()):
        with pytest.raises(QueueUnavailable):
            send_email.apply_async(kwargs={**kwargs, "account": "idem"}, queue=queue)
        redis.delete(broken)
        again = send_email.apply_async(kwargs={**kwargs, "account": "idem"}, queue=queue)
    assert redis.llen(broken) == 1  # the caller's retry is queued, not the dead first try
    assert (status(again.id) or {}).get("state") == "queued"
