"""Dead letters keep the reason; an operator can list, show and retry them. Keys dedupe."""

from __future__ import annotations

import time
import uuid

import pytest

from tasks import dead, send_email
from tasks.send import publish
from tests.conftest import PASSWORD
from tests.helpers import extra_account, messages_of, wait_for_status
from tests.test_cli import mailworker
from worker.devserver import DevServer, RecordingSMTP, Reply

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
