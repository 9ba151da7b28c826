"""A Redis locked down as the README says: ``default`` user off, one least-privilege ACL user.

The worker, the producer and the command line all work through ``redis://user:pass@...``
with only the rules of :data:`MAILWORKER_ACL_RULES`; anything else is refused by Redis.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis as redis_lib

from mailworker.dev.devredis import MAILWORKER_ACL_RULES
from mailworker.dev.devserver import DevServer, RecordingSMTP, Reply
from tests.helpers import send_elsewhere, states_when_sent, worker_process
from tests.test_cli import mailworker

README = Path(__file__).parent.parent / "docs" / "security.md"  # the Redis ACL, documented


def _refuse_once(marker: str) -> Any:
    refused: set[str] = set()
    lock = threading.Lock()

    def fault(command: str, argument: Any, _: RecordingSMTP) -> Reply | None:
        with lock:
            if command == "RCPT" and marker in str(argument) and marker not in refused:
                refused.add(marker)
                return Reply("451 4.3.0 Temporary local problem, try again in 1 seconds")
        return None

    return fault


@pytest.mark.slow
def test_worker_producer_and_cli_work_as_the_acl_user(
    locked_redis_url: str, server: DevServer, environment: dict[str, str], tmp_path: Path
) -> None:
    assert urlsplit(locked_redis_url).username == "mailer"
    server.fault = _refuse_once("flaky")  # one retry through the lifecycle and its mover
    env = {
        "REDIS_URL": locked_redis_url,
        "SMTP_URL_LOCKED": server.url() + "?rate=40/s&cluster_connections=1",
    }
    jobs = [
        {"to": to, "subject": "s", "text": "t", "account": "locked"}
        for to in [f"r{i}@example.com" for i in range(5)] + ["flaky@example.com"]
    ]
    job_ids = send_elsewhere(env, "acl-test", jobs)
    client = redis_lib.Redis.from_url(locked_redis_url, decode_responses=True)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log, worker_process("acl-test", env, log_file=log):
        states = states_when_sent(client, job_ids)
        stats = mailworker("stats", "--json", env=env)
        limits = mailworker("limits", "locked", "--json", env=env)
        doctor = mailworker("doctor", "--offline", "--json", env=env)
    client.close()
    assert states == ["sent"] * 6 and len(server.messages) == 6
    assert stats.returncode == 0, stats.stderr
    assert json.loads(limits.stdout)[0]["connections"]["cap"] == 1
    findings = {f["check"]: f for f in json.loads(doctor.stdout)}
    assert findings["redis"]["ok"] is True, findings["redis"]
    log_text = log_path.read_text(errors="replace")
    assert "NOPERM" not in log_text and "no permissions" not in log_text, log_text[-3000:]


def test_the_locked_redis_refuses_strangers_and_anything_beyond_the_rules(
    locked_redis_url: str,
) -> None:
    parts = urlsplit(locked_redis_url)
    stranger = redis_lib.Redis(host=parts.hostname, port=parts.port, socket_timeout=2)
    with pytest.raises(redis_lib.AuthenticationError):
        stranger.ping()  # the default user is off: no password, no access
    stranger.close()
    client = redis_lib.Redis.from_url(locked_redis_url)
    assert client.ping()
    forbidden = [
        ("FLUSHALL",),
        ("CONFIG", "GET", "requirepass"),
        ("KEYS", "*"),
        ("ACL", "LIST"),
        ("SHUTDOWN",),
        ("SET", "app:session:1", "x"),  # another application's keys
        ("GET", "app:session:1"),
        ("PUBLISH", "app-events", "x"),
    ]
    for command in forbidden:
        with pytest.raises(redis_lib.exceptions.NoPermissionError):
            client.execute_command(*command)
    client.close()


def test_the_readme_gives_the_acl_rules_the_tests_use() -> None:
    assert MAILWORKER_ACL_RULES in README.read_text()
