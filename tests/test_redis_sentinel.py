"""sentinel://: broker and mailworker's own keys found through a real Redis Sentinel."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from mailworker.dev.devredis import answers, start_private_redis
from mailworker.dev.devserver import DevServer, free_port
from tests.helpers import produce_elsewhere, states_when_sent, worker_process


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``(sentinel:// URL, the master's redis:// URL)``."""
    master = start_private_redis()
    master_port = master.url.split(":")[2].split("/")[0]
    port = free_port()
    config = Path(tmp_path_factory.mktemp("sentinel")) / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\n"
        f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
        "sentinel down-after-milliseconds mymaster 60000\n"
    )
    process = subprocess.Popen(
        ["redis-server", str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not answers(f"redis://127.0.0.1:{port}") and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"sentinel://127.0.0.1:{port}/0?master_name=mymaster", master.url
    process.terminate()
    process.wait(10)
    master.stop()


@pytest.mark.slow
def test_jobs_flow_through_a_sentinel_monitored_redis(
    sentinel: tuple[str, str], server: DevServer, environment: dict[str, str]
) -> None:
    sentinel_url, master_url = sentinel
    env = {"REDIS_URL": sentinel_url, "SMTP_URL_WATCHED": server.url() + "?rate=100/s"}
    job_ids = produce_elsewhere(env, "watched", "sentinel-test", 10)
    master = redis_lib.Redis.from_url(master_url, decode_responses=True)
    with worker_process("sentinel-test", env):
        assert states_when_sent(master, job_ids) == ["sent"] * 10
    assert len(server.messages) == 10
    assert master.keys("mailworker:{account:watched}:rate:*")  # the limiter, via the master
    master.close()
