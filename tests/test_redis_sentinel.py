"""sentinel://: broker and mailworker's own keys found through a real Redis Sentinel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from tasks.status import status
from tests.helpers import worker_process
from worker.devredis import answers, start_private_redis
from worker.devserver import DevServer, free_port

PRODUCE = """
import json, sys
from tasks import send_email
ids = [send_email.apply_async(kwargs={"to": f"s{i}@example.com", "subject": "s", "text": "t",
       "account": "watched"}, queue="sentinel-test").id for i in range(int(sys.argv[1]))]
print(json.dumps(ids))
"""


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
    produced = subprocess.run(
        [sys.executable, "-c", PRODUCE, "10"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert produced.returncode == 0, produced.stderr
    job_ids = json.loads(produced.stdout)
    master = redis_lib.Redis.from_url(master_url, decode_responses=True)
    with worker_process("sentinel-test", env):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all((status(j, client=master) or {}).get("state") == "sent" for j in job_ids):
                break
            time.sleep(0.2)
    assert [status(j, client=master)["state"] for j in job_ids] == ["sent"] * 10
    assert len(server.messages) == 10
    assert master.keys("mailworker:{account:watched}:rate:*")  # the limiter, via the master
    master.close()
