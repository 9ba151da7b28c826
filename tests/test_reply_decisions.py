"""What each kind of reply does to people, accounts and messages, through a real worker.

A wrong suppression loses mail silently, so the replies that used to suppress people who did
nothing wrong (a policy refusal at RCPT, a full mailbox) are sent through the whole path:
real Redis, the in-process Celery worker, real TLS + AUTH servers, and a raw socket server
for what only Postfix does (421 to a pipelined RCPT, then close).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis as redis_lib
import trustme

from mailworker.dev.devserver import DevServer, RecordingSMTP, Reply
from mailworker.settings import reload_settings
from mailworker.store import keys
from mailworker.store.dead import count as dead_count
from mailworker.store.pauses import paused_until
from mailworker.store.suppression import suppressed
from mailworker.tasks import send_email, status
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
from tests.raw_smtp import RawSmtpServer
from tests.test_cli import mailworker

NOT_OWNED = "553 5.7.1 <app@example.com>: Sender address rejected: not owned by user " + USER


@pytest.fixture
def settings_env() -> Iterator[dict[str, str]]:
    """Extra settings for one test, seen by the producer and the in-process worker."""
    extra: dict[str, str] = {}
    yield extra
    for name in extra:
        os.environ.pop(name, None)
    reload_settings()


def _use(settings_env: dict[str, str], **values: str) -> None:
    settings_env.update(values)
    os.environ.update(values)
    reload_settings()


@pytest.mark.usefixtures("celery_worker")
def test_a_sender_refused_at_rcpt_pauses_the_account_and_suppresses_nobody(
    server: DevServer, settings_env: dict[str, str]
) -> None:
    _use(settings_env, ACCOUNT_PAUSE_SECONDS="300")
    server.fault = lambda command, _a, _s: Reply(NOT_OWNED) if command == "RCPT" else None
    people = ["reset-ann@example.com", "reset-bob@example.com"]
    with extra_account("notowned", server.url()):
        first = send_email.delay(to=people, subject="s", text="t", account="notowned")
        record = wait_for_status(first.id, "paused")
        pause = paused_until("notowned")
        assert pause is not None and pause[0] > time.time() + 250
        assert record["attempt"] == 1 and "553" in record["error"]
        assert suppressed(people) == set()
        # The operator fixes the From; meanwhile a password reset to the same person waits.
        later = send_email.delay(to=people[0], subject="reset", text="t", account="notowned")
        wait_for_status(later.id, "paused")
        server.fault = None
        run = mailworker("resume", "notowned", env={})
        assert run.returncode == 0, run.stderr
        assert "resumed" in run.stdout and "2 held job(s)" in run.stdout
        took = wait_until(
            lambda: all((status(j) or {}).get("state") == "sent" for j in (first.id, later.id)),
            10,
            "held jobs sent after resume",
        )
    assert took < 5
    assert [sorted(m.rcpt_tos) for m in messages_of(server, first.id)] == [sorted(people)]
    assert [m.rcpt_tos for m in messages_of(server, later.id)] == [(people[0],)]
    assert suppressed(people) == set()


@pytest.mark.usefixtures("celery_worker")
def test_resume_after_fixing_a_wrong_password_sends_the_held_jobs_within_seconds(
    server: DevServer, settings_env: dict[str, str]
) -> None:
    _use(settings_env, ACCOUNT_PAUSE_SECONDS="300")
    dead_before = dead_count()
    with extra_account("fixed", server.url(USER, "expired-password")):
        job_ids = send_many(3, "fixed")
        for job_id in job_ids:
            assert "535" in wait_for_status(job_id, "paused")["error"]
        assert server.messages == []
        os.environ["SMTP_URL_FIXED"] = server.url()  # the operator fixes the password
        reload_settings()
        # Nothing moves while paused: every job waits for the pause's end, 5 minutes away.
        assert all(float(status(j)["next_attempt_at"]) > time.time() + 250 for j in job_ids)
        assert server.messages == []
        run = mailworker("resume", "fixed", env={})
        assert run.returncode == 0, run.stderr
        started = time.monotonic()
        wait_all_sent(job_ids, timeout=10)
        took = time.monotonic() - started
    assert took < 5, took
    assert dead_count() == dead_before
    ids = Counter(str(m.message["Message-ID"]) for m in server.messages)
    assert sorted(ids.values()) == [1, 1, 1]


@pytest.mark.usefixtures("celery_worker")
def test_a_full_mailbox_among_three_is_retried_then_failed_and_never_pauses(
    server: DevServer, settings_env: dict[str, str]
) -> None:
    _use(settings_env, RETRY_MAX_ATTEMPTS="3")
    tries: list[float] = []
    paused_seen: list[object] = []

    def full(command: str, argument: object, _: RecordingSMTP) -> Reply | None:
        if command == "RCPT" and "full-carol@" in str(argument):
            tries.append(time.time())
            paused_seen.append(paused_until("fullbox"))
            return Reply("552 5.2.2 <full-carol@example.com>: Quota exceeded (mailbox is full)")
        return None

    server.fault = full
    people = ["ann@example.com", "full-carol@example.com", "bob@example.com"]
    with extra_account("fullbox", server.url()):
        job = send_email.delay(to=people, subject="s", text="t", account="fullbox")
        record = wait_for_status(job.id, "failed", timeout=30)
        paused_seen.append(paused_until("fullbox"))
    assert len(tries) == 3  # RETRY_MAX_ATTEMPTS
    assert paused_seen == [None] * 4
    [delivered] = messages_of(server, job.id)
    assert sorted(delivered.rcpt_tos) == ["ann@example.com", "bob@example.com"]
    assert record["recipients"]["ann@example.com"] == "sent"
    assert record["recipients"]["full-carol@example.com"].startswith("failed gave up after 3")
    assert suppressed(people) == set()


@pytest.mark.usefixtures("celery_worker")
def test_too_many_recipients_sends_the_rest_in_another_transaction_at_once(
    server: DevServer,
) -> None:
    def two_per_transaction(command: str, _a: object, session: RecordingSMTP) -> Reply | None:
        if command == "RCPT" and len(session.envelope.rcpt_tos) >= 2:
            return Reply("552 5.5.3 Too many recipients")
        return None

    server.fault = two_per_transaction
    people = [f"member{i}@example.com" for i in range(5)]
    with extra_account("fewrcpts", server.url()):
        job = send_email.delay(to=people, subject="s", text="t", account="fewrcpts")
        record = wait_for_status(job.id, "sent", "failed", "deferred")
    copies = messages_of(server, job.id)
    assert [len(m.rcpt_tos) for m in copies] == [2, 2, 1]
    assert sorted(r for m in copies for r in m.rcpt_tos) == people
    assert record["state"] == "sent" and record["attempt"] == 1
    assert suppressed(people) == set()


@pytest.mark.usefixtures("celery_worker")
def test_a_pause_that_never_ends_still_ages_out_by_retry_max_age(
    server: DevServer, settings_env: dict[str, str]
) -> None:
    _use(settings_env, RETRY_MAX_AGE="3", ACCOUNT_PAUSE_SECONDS="1")
    with extra_account("neverfixed", server.url(USER, "expired-password")):
        job = send_email.delay(to="ann@example.com", subject="s", text="t", account="neverfixed")
        record = wait_for_status(job.id, "failed", timeout=20)
    assert "RETRY_MAX_AGE" in record["error"]
    assert server.messages == []


@pytest.mark.usefixtures("celery_worker")
def test_a_pipelined_421_then_close_slows_the_account_down_and_retries_later(
    ca: trustme.CA, redis: redis_lib.Redis, settings_env: dict[str, str]
) -> None:
    _use(settings_env, RETRY_BASE_DELAY="2")  # the retry comes 1-2 s later: watchable

    # The first message opens and warms the session; the second one's RCPT gets Postfix's anvil
    # 421 and the connection closes with its pipelined DATA unanswered.
    def closing(connection: int, recipient: str) -> str | None:
        if connection == 1 and "second@" in recipient:
            return "421 4.7.0 raw.example.com Error: too many connections from 192.0.2.10"
        return None

    account = "postfixlike"
    with RawSmtpServer(ca, closing) as raw, extra_account(account, raw.url()):
        first = send_email.delay(
            to="first@example.com", subject="s", text="t", account="postfixlike"
        )
        wait_for_status(first.id, "sent")
        second = send_email.delay(
            to="second@example.com", subject="s", text="t", account="postfixlike"
        )
        deferred = wait_for_status(second.id, "deferred", "sent")
        slow = redis.hgetall(keys.account(account, "slow"))
        record = wait_for_status(second.id, "sent", timeout=20)
    assert deferred["state"] == "deferred" and "421" in deferred["error"]
    assert slow and float(slow[b"factor"]) < 1  # halved: a throttle, not a dropped link
    assert record["attempt"] == 2  # retried later, not resent at once on a new connection
    assert len(raw.log.messages) == 2 and len(raw.log.connections) == 2


@pytest.mark.usefixtures("celery_worker")
def test_task_events_carry_ids_and_outcomes_never_an_address_or_a_reply(
    server: DevServer, environment: dict[str, str]
) -> None:
    """Flower shows every task's return value (task-succeeded); a reply quotes addresses.
    A worker with task events on from the start (CELERY_EVENTS=true; Flower would turn them
    on anyway)."""
    from mailworker.tasks.app import app

    seen: list[dict[str, object]] = []
    receiving = threading.Event()
    receivers: list[object] = []

    def listen() -> None:
        with app.connection_for_read() as connection:
            receiver = app.events.Receiver(
                connection, handlers={"task-succeeded": seen.append, "*": lambda _: None}
            )
            receivers.append(receiver)
            receiving.set()
            receiver.capture(limit=None, timeout=None, wakeup=False)

    def busy(command: str, argument: object, _: RecordingSMTP) -> Reply | None:
        if command == "RCPT" and "busy-reader@" in str(argument):
            return Reply("450 4.2.1 <busy-reader@example.com>: Mailbox busy, try again in 60 s")
        if command == "RCPT" and "gone-reader@" in str(argument):
            return Reply("550 5.1.1 <gone-reader@example.com>: Recipient address rejected")
        return None

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert receiving.wait(10)
    server.fault = busy
    people = ["busy-reader@example.com", "gone-reader@example.com", "ann@example.com"]
    env = {**environment, "SMTP_URL_FLOWERISH": server.url(), "CELERY_EVENTS": "true"}
    with extra_account("flowerish", server.url()), worker_process("flowerish", env):
        job = send_email.apply_async(
            kwargs={"to": people, "subject": "s", "text": "t", "account": "flowerish"},
            queue="flowerish",
        )
        wait_for_status(job.id, "deferred")
        try:
            wait_until(lambda: any(job.id in str(e.get("result")) for e in seen), 10, "event")
        finally:
            receivers[0].should_stop = True  # type: ignore[attr-defined]
            listener.join(10)
    results = " ".join(str(event.get("result")) for event in seen)
    assert "deferred" in results and job.id in results
    for private in ("busy-reader", "gone-reader", "ann@", "example.com", "450", "550"):
        assert private not in results, private
