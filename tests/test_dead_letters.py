"""Dead letters keep the reason; an operator can list, show and retry them. Keys dedupe."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
import redis as redis_lib

from mailworker.dev.devserver import DevServer, RecordingSMTP, Reply
from mailworker.store import dead
from mailworker.tasks import send_email
from mailworker.tasks.app import SEND_EMAIL_TASK, app, queue_key
from mailworker.tasks.send import publish
from tests.conftest import PASSWORD
from tests.helpers import extra_account, messages_of, wait_for_status
from tests.test_cli import mailworker

pytestmark = pytest.mark.usefixtures("celery_worker")


def test_a_rejected_message_is_dead_lettered_at_once_and_can_be_retried(
    server: DevServer, environment: dict[str, str]
) -> None:
    def reject_content(command: str, _: object, __: RecordingSMTP) -> Reply | None:
        return Reply("554 5.6.0 Message content rejected") if command == "DATA" else None

    server.fault = reject_content
    with extra_account("strict", server.url()):
        result = send_email.delay(to="ann@example.com", subject="s", text="t", account="strict")
        record = wait_for_status(result.id, "failed")
        assert record["attempt"] == 1 and "554" in record["error"]
        letter = dead.show(result.id)
        assert letter is not None and letter["code"] == "554" and letter["attempts"] == "1"
        assert PASSWORD not in str(letter)

        env = {**environment, "SMTP_URL_STRICT": server.url()}
        listed = mailworker("dead", "list", "--json", env=env)
        assert result.id in listed.stdout
        server.fault = None  # the content problem is fixed
        retried = mailworker("dead", "retry", result.id, env=env)
        assert retried.returncode == 0, retried.stderr
        wait_for_status(result.id, "sent")
    assert dead.show(result.id) is None
    assert len(messages_of(server, result.id)) == 1


def test_an_undecodable_job_is_dead_lettered_and_the_worker_keeps_going(
    starttls_server: DevServer,
) -> None:
    bogus = str(uuid.uuid4())
    publish(bogus, {"v": 99, "what": "a payload from the future"}, "email")
    deadline = time.monotonic() + 20
    while dead.show(bogus) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    letter = dead.show(bogus)
    assert letter is not None and "version 99" in letter["reason"]
    after = send_email.delay(to="ann@example.com", subject="s", text="t")
    wait_for_status(after.id, "sent")


def _envelope(task: str, body: bytes, job_id: str) -> str:
    """A kombu message envelope as it sits in the Redis list (what any Redis writer can push)."""
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"id": job_id, "task": task, "lang": "py"},
            "properties": {
                "delivery_tag": str(uuid.uuid4()),
                "body_encoding": "base64",
                "delivery_info": {"exchange": "", "routing_key": "email"},
                "priority": 0,
            },
        }
    )


def test_foreign_messages_in_the_queue_are_dead_lettered_and_the_worker_keeps_going(
    starttls_server: DevServer, redis: redis_lib.Redis, environment: dict[str, str]
) -> None:
    pickled, bad_body, unknown, positional = (str(uuid.uuid4()) for _ in range(4))
    app.send_task(SEND_EMAIL_TASK, kwargs={"job": {"v": 1}}, task_id=pickled, serializer="pickle")
    queue = queue_key("email")
    redis.lpush(queue, b"Garbage-Gecko \x80 not even JSON")
    redis.lpush(queue, _envelope(SEND_EMAIL_TASK, b"{not json", bad_body))
    redis.lpush(queue, _envelope("evil.task", b"[[], {}, {}]", unknown))
    redis.lpush(queue, _envelope(SEND_EMAIL_TASK, b'[["x"], {}, {}]', positional))
    expected = {
        pickled: "refusing to deserialize untrusted content",
        bad_body: "body does not decode",
        unknown: "unknown task 'evil.task'",
        positional: "expected one keyword argument job=",
    }
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(dead.show(j) is None for j in expected):
        time.sleep(0.05)
    for job_id, words in expected.items():
        letter = dead.show(job_id)
        assert letter is not None and words in letter["reason"].lower(), (words, letter)
    garbage = [d for d in dead.list_dead(1000) if "Garbage-Gecko" in str(d["payload"])]
    assert len(garbage) == 1 and "not a JSON message envelope" in garbage[0]["reason"]
    retried = mailworker("dead", "retry", garbage[0]["job_id"], unknown, env=environment)
    assert retried.returncode == 0 and "not jobs, kept as dead letters" in retried.stdout
    after = send_email.delay(to="ann@example.com", subject="s", text="t")
    wait_for_status(after.id, "sent")


def test_the_same_idempotency_key_enqueues_once(starttls_server: DevServer) -> None:
    key = f"order-{uuid.uuid4()}-confirmation"
    first = send_email.delay(to="ann@example.com", subject="s", text="t", idempotency_key=key)
    second = send_email.delay(to="ann@example.com", subject="s", text="t", idempotency_key=key)
    assert second.id == first.id
    wait_for_status(first.id, "sent")
    third = send_email.delay(to="ann@example.com", subject="s", text="t", idempotency_key=key)
    assert third.id == first.id  # delivered already: still nothing new
    time.sleep(0.5)
    assert len(messages_of(starttls_server, first.id)) == 1
