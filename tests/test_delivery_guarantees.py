"""Every job ends delivered, deferred or dead-lettered; nobody gets a second copy.

Real Redis, real worker processes, a real SMTP server that misbehaves on purpose.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter

import pytest

from mailworker.dev.devserver import DevServer, RecordingSMTP, Reply
from mailworker.settings import reload_settings
from mailworker.store import lifecycle
from mailworker.store.dead import count as dead_count
from mailworker.store.lifecycle import due_at
from mailworker.store.pauses import paused_until
from mailworker.store.status import status
from mailworker.store.suppression import suppressed
from mailworker.tasks import send_email
from mailworker.tasks.send import enqueue
from mailworker.tasks.validation import build_job
from tests.conftest import USER
from tests.helpers import (
    extra_account,
    messages_of,
    send_many,
    wait_all_sent,
    wait_for_status,
    wait_until,
    worker_process,
)


def message_ids(server: DevServer) -> Counter[str]:
    return Counter(str(m.message["Message-ID"]) for m in server.messages)


@pytest.mark.usefixtures("celery_worker")
def test_550_for_one_of_three_recipients(server: DevServer) -> None:
    def refuse_nobody(command: str, argument: object, _: RecordingSMTP) -> Reply | None:
        if command == "RCPT" and "nobody@" in str(argument):
            return Reply("550 5.1.1 <nobody@example.com>: Recipient address rejected")
        return None

    server.fault = refuse_nobody
    with extra_account("partial", server.url()):
        result = send_email.delay(
            to=["ann@example.com", "nobody@example.com"],
            cc="bob@example.com",
            subject="s",
            text="t",
            account="partial",
        )
        record = wait_for_status(result.id, "sent", "failed", "deferred")
        again = send_email.delay(to="nobody@example.com", subject="s", text="t", account="partial")
        second = wait_for_status(again.id, "sent", "failed", "deferred")
    assert record["state"] == "sent"
    assert record["recipients"]["ann@example.com"] == "sent"
    assert record["recipients"]["bob@example.com"] == "sent"
    assert record["recipients"]["nobody@example.com"].startswith("bounced 550")
    [delivered] = messages_of(server, result.id)
    assert sorted(delivered.rcpt_tos) == ["ann@example.com", "bob@example.com"]
    assert suppressed(("nobody@example.com",)) == {"nobody@example.com"}
    assert second["state"] == "failed" and messages_of(server, again.id) == []


@pytest.mark.usefixtures("celery_worker")
def test_a_transient_refusal_is_retried_for_that_recipient_only(server: DevServer) -> None:
    refused: list[str] = []

    def busy_once(command: str, argument: object, _: RecordingSMTP) -> Reply | None:
        if command == "RCPT" and "carl@" in str(argument) and not refused:
            refused.append(str(argument))
            return Reply("450 4.2.1 Mailbox busy, try again in 1 seconds")
        return None

    server.fault = busy_once
    with extra_account("busy", server.url()):
        result = send_email.delay(
            to=["ann@example.com", "carl@example.com"], subject="s", text="t", account="busy"
        )
        record = wait_for_status(result.id, "sent", "failed")
    copies = messages_of(server, result.id)
    assert [sorted(m.rcpt_tos) for m in copies] == [["ann@example.com"], ["carl@example.com"]]
    assert record["state"] == "sent" and record["attempt"] == 2


@pytest.mark.usefixtures("celery_worker")
def test_535_pauses_the_account_and_mail_goes_out_once_the_password_is_fixed(
    server: DevServer,
) -> None:
    dead_before = dead_count()
    with extra_account("locked", server.url(USER, "expired-password")):
        job_ids = send_many(3, "locked")
        for job_id in job_ids:
            assert "535" in wait_for_status(job_id, "paused")["error"]
        assert paused_until("locked") is not None
        assert server.messages == []
        os.environ["SMTP_URL_LOCKED"] = server.url()  # the operator fixes the password
        reload_settings()
        wait_all_sent(job_ids, timeout=30)
    assert dead_count() == dead_before
    assert sorted(message_ids(server).values()) == [1, 1, 1]


@pytest.mark.slow
@pytest.mark.usefixtures("celery_worker")
def test_1000_jobs_through_a_server_failing_10_percent_arrive_exactly_once(
    server: DevServer,
) -> None:
    chance = random.Random(1234)
    plan: dict[int, str] = {}

    def unreliable(command: str, _: object, session: RecordingSMTP) -> Reply | None:
        if command == "MAIL":
            roll = chance.random()
            plan[session.connection_id] = (
                "drop" if roll < 0.033 else "421" if roll < 0.066 else "451" if roll < 0.1 else ""
            )
            if plan[session.connection_id] == "drop":
                return Reply(None, close=True)
        if command == "DATA":
            fault = plan.pop(session.connection_id, "")
            if fault == "421":
                return Reply("421 4.3.0 Service shutting down", close=True)
            if fault == "451":
                return Reply("451 4.3.0 Local error in processing")
        return None

    server.fault = unreliable
    with extra_account("unreliable", server.url()):
        job_ids = send_many(1000, "unreliable")
        wait_all_sent(job_ids, timeout=240)
    ids = message_ids(server)
    assert len(ids) == 1000 and set(ids.values()) == {1}
    assert server.log.commands["MAIL"] > 1050  # the faults really forced retries


def test_a_job_deferred_for_2_hours_survives_a_worker_restart(
    server: DevServer, environment: dict[str, str]
) -> None:
    from mailworker.settings import get_settings

    with extra_account("later", server.url()):
        job = build_job(
            get_settings(),
            {"to": "ann@example.com", "subject": "s", "text": "t", "account": "later"},
        )
        due = time.time() + 7200
        enqueue(job, queue="restart-test", send_at=due)
        env = {"SMTP_URL_LATER": server.url()}
        for _ in range(2):
            with worker_process("restart-test", env) as worker:
                time.sleep(3)
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
    assert due_at(job.id) == pytest.approx(due)
    assert server.messages == []


@pytest.mark.slow
def test_sigterm_during_a_drain_exits_in_time_and_loses_nothing(
    server: DevServer, environment: dict[str, str]
) -> None:
    env = {"SMTP_URL_DRAIN": server.url()}
    with extra_account("drain", server.url()):
        job_ids = send_many(400, "drain", queue="sigterm-test")
        with worker_process("sigterm-test", env) as worker:
            server.log.wait_for_messages(100, timeout=60)
            started = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            worker.wait(25)
            assert time.monotonic() - started < 25
        with worker_process("sigterm-test", env):
            wait_all_sent(job_ids, timeout=120)
    ids = message_ids(server)
    assert len(ids) == 400 and set(ids.values()) == {1}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_three_times_while_2000_jobs_drain(
    server: DevServer, environment: dict[str, str]
) -> None:
    # A short visibility timeout so the killed workers' jobs come back within the test.
    # A short visibility timeout and acquire timeout (which bounds a killed worker's run
    # lock) so the killed workers' jobs come back within the test.
    url = server.url() + "?acquire_timeout=5"
    env = {"SMTP_URL_CRASHY": url, "REDIS_VISIBILITY_TIMEOUT": "10"}
    kills: list[float] = []
    with extra_account("crashy", url):
        job_ids = send_many(2000, "crashy", queue="sigkill-test")
        for milestone in (400, 900, 1400):
            # One thread, so one session can be in the RFC 1047 window when the kill lands:
            # with N threads, N sessions can each have had a 250 and no ledger write yet.
            with worker_process("sigkill-test", env, concurrency=1) as worker:
                server.log.wait_for_messages(milestone, timeout=120)
                # Kill at a moment unrelated to any acceptance, as real crashes are.
                time.sleep(random.uniform(0.05, 0.3))
                worker.send_signal(signal.SIGKILL)
                kills.append(time.time())
                worker.wait(10)
        with worker_process("sigkill-test", env):
            wait_all_sent(job_ids, timeout=240)
    ids = message_ids(server)
    assert len(ids) == 2000  # nothing lost
    # SMTP cannot make "the server said 250" and "we wrote that down" one atomic step
    # (RFC 1047): a worker killed in the millisecond between them sends that message again.
    # Anything else sent twice is a bug.
    first_copy = {}
    for message in server.messages:
        first_copy.setdefault(str(message.message["Message-ID"]), message.received_at)
    for message_id, copies in ids.items():
        if copies > 1:
            assert copies == 2
            # That millisecond stretches to a scheduling slice on a loaded 2-core machine, and
            # a message written just before the kill reaches the server a moment after it.
            gaps = [round(kill - first_copy[message_id], 3) for kill in kills]
            assert any(-0.05 <= gap < 0.25 for gap in gaps), (message_id, gaps)
    assert sum(copies - 1 for copies in ids.values()) <= len(kills)


def _deferred_by_a_worker_that_saw_a_451(job_id: str) -> None:
    """Take the job through one attempt that ended in a retry, as a worker would."""
    claim = lifecycle.claim(job_id, "test-worker", 30, queue="lost-test")
    assert claim.verdict == "claimed"
    payload = {**(claim.payload or {}), "attempt": 2}
    fields = {"attempt": "2", "payload": json.dumps(payload), "error": "451 try later"}
    settlement = lifecycle.Settlement("deferred", "lost", fields, {"deferred": 1}, delay=0)
    assert lifecycle.settle(job_id, "test-worker", settlement, dead_retention=60)[0]


@pytest.mark.parametrize("kind", ["first attempt", "retried", "scheduled"])
def test_a_job_whose_broker_message_was_lost_is_found_and_sent_once(
    server: DevServer, environment: dict[str, str], kind: str
) -> None:
    from mailworker.store.client import get_redis
    from mailworker.worker.housekeeping import move_due

    client = get_redis()
    with extra_account("lost", server.url()):
        send_at = time.time() + 0.5 if kind == "scheduled" else None
        extra = {"send_at": send_at} if send_at else {}
        [job_id] = send_many(1, "lost", queue="lost-test", **extra)
        if kind == "retried":
            _deferred_by_a_worker_that_saw_a_451(job_id)
        if kind != "first attempt":
            wait_until(lambda: move_due() > 0, 5, "the job published when due")
        assert (status(job_id) or {}).get("state") == "queued"
        client.delete("mailworker:celery:lost-test")  # ... and the broker lost it
        started = time.monotonic()
        with worker_process("lost-test", {"SMTP_URL_LOST": server.url()}):
            wait_all_sent([job_id], timeout=40)
        # Found once the job is LOST_MESSAGE_AFTER_SECONDS (8 s) old in an empty queue, at
        # the next reaper round (5 s), plus the worker's start.
        assert time.monotonic() - started < 8 + 5 + 10
    assert len(messages_of(server, job_id)) == 1
    record = wait_for_status(job_id, "sent")
    assert record["attempt"] == (2 if kind == "retried" else 1)


@pytest.mark.slow
def test_a_backlog_older_than_every_timeout_is_sent_exactly_once(
    server: DevServer, environment: dict[str, str]
) -> None:
    from mailworker.store.stats import account_counts

    visibility = 10
    env = {"SMTP_URL_BACKLOG": server.url(), "REDIS_VISIBILITY_TIMEOUT": str(visibility)}
    with extra_account("backlog", server.url()):
        job_ids = send_many(200, "backlog", queue="backlog-test")
        # No worker for twice the visibility timeout and past LOST_MESSAGE_AFTER_SECONDS:
        # every job is old, none is lost, so none may be published a second time.
        time.sleep(max(2 * visibility, 8) + 2)  # the scenario: time passing with no worker
        with worker_process("backlog-test", env, concurrency=8):
            wait_all_sent(job_ids, timeout=90)
            time.sleep(8 + 5 + 1)  # past LOST_MESSAGE_AFTER and a reaper round: nothing found
    ids = message_ids(server)
    assert len(ids) == 200 and set(ids.values()) == {1}
    assert account_counts(["backlog"])["backlog"]["sent"] == 200
