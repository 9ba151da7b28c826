"""Expiry per message: a job not accepted by a server by its expiry is never sent, wherever
it waits (its queue, a rate limit, a paused account, a backoff); it ends ``expired`` in its
status, its account's stats and its events, with no dead letter. Real Redis, real workers,
a real TLS + AUTH server."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest

from mailworker.dev.devserver import DevServer
from mailworker.store import keys
from mailworker.store.pauses import pause_account
from mailworker.store.stats import account_counts
from mailworker.tasks import InvalidEmail, send_email, status
from tests.helpers import extra_account, wait_for_status, worker_process


def delivered(server: DevServer, job_id: str) -> bool:
    return any(job_id.encode() in m.data for m in server.messages)


def test_a_job_held_behind_a_rate_limit_expires_and_is_never_sent(
    server: DevServer, celery_worker: Any, redis: Any
) -> None:
    with extra_account("expiring", server.url() + "?rate=1/m"):
        first = send_email.delay(to="a@example.com", subject="s", text="x", account="expiring")
        wait_for_status(first.id, "sent")
        held = send_email.delay(
            to="b@example.com", subject="code", text="123", account="expiring", expires_in=2
        )
        record = wait_for_status(held.id, "expired", "sent", "deferred", timeout=10)
        assert record["state"] == "expired", record
        assert "expiry" in record["error"]
        assert redis.zscore(keys.DEAD, held.id) is None  # no dead letter
        assert account_counts(["expiring"])["expiring"]["expired"] == 1  # mailworker stats
    assert not delivered(server, held.id)


def test_behind_a_paused_account_the_short_expiry_ends_and_the_long_one_is_sent(
    server: DevServer, celery_worker: Any
) -> None:
    with extra_account("resting", server.url()):
        until, _ = pause_account("resting", 3, "test pause")
        short = send_email.delay(
            to="s@example.com", subject="s", text="x", account="resting", expires_in=2
        )
        long = send_email.delay(
            to="l@example.com", subject="s", text="x", account="resting",
            expires_at=datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=60),
        )  # fmt: skip
        assert wait_for_status(short.id, "expired", "sent", timeout=10)["state"] == "expired"
        wait_for_status(long.id, "sent", timeout=30)
        assert time.time() >= until - 0.5  # not before the pause ended
    assert delivered(server, long.id) and not delivered(server, short.id)


def test_a_job_expires_in_its_queue_and_a_late_worker_never_sends_it(
    server: DevServer, celery_worker: Any, environment: dict[str, str]
) -> None:
    """Nobody serves the queue until after the expiry: the housekeeper (of the running
    worker) ends it within a second of the expiry; the worker that comes later takes the
    stale message and sends nothing."""
    with extra_account("idle", server.url()):
        queue = "expiry-idle"
        job = send_email.apply_async(
            kwargs={"to": "q@example.com", "subject": "s", "text": "x", "account": "idle",
                    "expires_in": 1.5},
            queue=queue,
        )  # fmt: skip
        expires = time.time() + 1.5
        wait_for_status(job.id, "expired", timeout=10)
        assert time.time() - expires < 1.5
        env = {**environment, "SMTP_URL_IDLE": server.url()}
        with worker_process(queue, env):
            later = send_email.apply_async(
                kwargs={"to": "late@example.com", "subject": "s", "text": "x", "account": "idle"},
                queue=queue,
            )
            wait_for_status(later.id, "sent", timeout=30)  # the queue has been drained
    assert not delivered(server, job.id)
    record = status(job.id)
    assert record is not None and record["state"] == "expired"


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"expires_in": 0}, "positive"),
        ({"expires_in": "600"}, "expected seconds"),
        ({"expires_in": 60, "expires_at": 4102444800}, "not both"),
        ({"expires_at": datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)}, "in the past"),
        ({"expires_at": datetime.datetime(2099, 1, 1)}, "timezone-aware"),
        ({"expires_in": 10, "send_at": "in 60 s"}, "before its send_at"),
    ],
)
def test_an_expiry_that_cannot_work_is_refused_at_enqueue(
    arguments: dict[str, Any], says: str
) -> None:
    if arguments.get("send_at") == "in 60 s":  # relative to the test's run, not collection
        arguments = {**arguments, "send_at": time.time() + 60}
    with pytest.raises(InvalidEmail, match=says):
        send_email.delay(to="x@example.com", subject="s", text="x", **arguments)
