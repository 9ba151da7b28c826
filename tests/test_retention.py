"""Nothing is kept forever: after a round of real work every key mailworker wrote has a TTL
or an owner named in ``store/keys.py`` that deletes it.

A private Redis, real ``celery worker`` processes for the ``email`` and ``bulk`` queues, a
real TLS + AUTH SMTP server that bounces one address and refuses one message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis as redis_lib

from mailworker.dev.devredis import PrivateRedis, start_private_redis
from mailworker.dev.devserver import DevServer, RecordingSMTP, Reply
from mailworker.settings import reload_settings
from mailworker.store import campaigns, dead, keys, lifecycle
from mailworker.tasks import status
from tests.helpers import send_elsewhere, wait_until, worker_process
from tests.test_cli import mailworker

DAY = 24 * 3600
# Keys whose end is an owner, not a TTL (see store/keys.py).
OWNED = {keys.SUPPRESSED, keys.JOBS_DUE, keys.JOBS_QUEUED, keys.JOBS_LEASED, keys.DEAD}
_CAMPAIGN = """
import sys
from mailworker.tasks.campaign import start_campaign
rows = [{"email": f"reader{i}@example.com", "name": f"R{i}"} for i in range(3)]
template = {"subject": "Hi {{ name }}", "text": "Hello {{ name }}"}
print(start_campaign(template, rows, campaign_id=sys.argv[1]))
"""


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = start_private_redis()
    yield server
    server.stop()


def _refusing(command: str, argument: object, _: RecordingSMTP) -> Reply | None:
    if command == "RCPT" and "gone@" in str(argument):
        return Reply("550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown")
    if command == "RCPT" and "spam@" in str(argument):
        return Reply("550 5.7.1 Message refused as spam")
    return None


def _all_ended(client: redis_lib.Redis, job_ids: list[str]) -> bool:
    states = {(status(j, client=client) or {}).get("state") for j in job_ids}
    campaign = campaigns.status("keep", client=client) or {}
    return states <= {"sent", "failed"} and campaign.get("done") == 3


def test_every_key_has_a_ttl_or_a_named_owner(
    server: DevServer, private_redis: PrivateRedis, environment: dict[str, str]
) -> None:
    server.fault = _refusing
    env = {
        **environment,
        "REDIS_URL": private_redis.url,
        "SMTP_URL": server.url(),
        "SMTP_URL_BULK": server.url(),
        "CAMPAIGN_RETENTION": str(3 * DAY),
        "DEAD_LETTER_RETENTION": str(2 * DAY),
    }
    jobs = [
        {"to": "kept@example.com", "subject": "s", "text": "t", "idempotency_key": "once"},
        {"to": "gone@example.com", "subject": "s", "text": "t"},
        {"to": "spam@example.com", "subject": "s", "text": "t"},
    ]
    client = redis_lib.Redis.from_url(private_redis.url, decode_responses=True)
    with worker_process("email", env), worker_process("bulk", env, name="bulk"):
        job_ids = send_elsewhere(env, "email", jobs)
        campaign = subprocess.run(
            [sys.executable, "-c", _CAMPAIGN, "keep"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert campaign.returncode == 0, campaign.stderr
        wait_until(lambda: len(server.messages) >= 4 and client.zcard(keys.DEAD) >= 1, 60, "work")
        wait_until(lambda: _all_ended(client, job_ids), 30, "every job and the campaign ended")
    found = {key: client.ttl(key) for key in client.scan_iter("mailworker:*")}
    mine = {k: ttl for k, ttl in found.items() if not k.startswith(keys.CELERY_PREFIX)}
    forever = {k for k, ttl in mine.items() if ttl == -1 and k not in OWNED}
    assert {k for k in forever if not k.startswith(keys.stats(""))} == set()
    campaign_keys = {k: ttl for k, ttl in mine.items() if "{campaign:keep}" in k}
    assert len(campaign_keys) >= 4
    assert all(3 * DAY - 60 < ttl <= 3 * DAY for ttl in campaign_keys.values())
    [dead_id] = client.zrange(keys.DEAD, 0, -1)
    assert 2 * DAY - 60 < client.ttl(keys.dead_letter(dead_id)) <= 2 * DAY
    assert json.loads(client.hget(keys.dead_letter(dead_id), "payload"))["to"][0][1] == (
        "spam@example.com"
    )


@pytest.mark.usefixtures("environment")
def test_dead_letters_older_than_an_age_are_purged_and_the_index_is_trimmed(
    redis: redis_lib.Redis,
) -> None:
    now = time.time()
    for job_id, age in (("ancient", 40 * DAY), ("old", 10 * DAY), ("new", 60)):
        dead.bury(job_id, {"account": "default"}, reason="test", queue="email")
        redis.zadd(keys.DEAD, {job_id: now - age})
    dead.bury("fresh", {"account": "default"}, reason="test", queue="email")  # trims to 30 d
    assert {m.decode() for m in redis.zrange(keys.DEAD, 0, -1)} >= {"old", "new", "fresh"}
    assert redis.zscore(keys.DEAD, "ancient") is None
    run = mailworker("dead", "purge", "--older-than", "7d", "--yes", env={})
    assert run.returncode == 0 and "deleted 1 dead letter(s)" in run.stdout, run.stderr
    assert redis.exists(keys.dead_letter("old")) == 0
    assert redis.zscore(keys.DEAD, "new") is not None
    assert mailworker("dead", "purge", "--older-than", "soon", "--yes", env={}).returncode == 2
    dead.purge()


@pytest.mark.usefixtures("environment")
def test_index_entries_whose_record_expired_leave_the_index(redis: redis_lib.Redis) -> None:
    redis.zadd(keys.JOBS_DUE, {"orphan-due": time.time() - 1})
    redis.zadd(keys.JOBS_LEASED, {"orphan-leased": time.time() - 1})
    reload_settings()
    assert lifecycle.promote_due() == []
    assert lifecycle.reap_leases() == []
    assert redis.zscore(keys.JOBS_DUE, "orphan-due") is None
    assert redis.zscore(keys.JOBS_LEASED, "orphan-leased") is None
