"""Events to the app: every recipient outcome reaches the app's own Celery task (a plain
Celery app on the same Redis, in its own worker process), each exactly once after
deduplication on its id, while that task is slow and delivery runs at full speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from mailworker.dev.devserver import DevServer, Reply
from mailworker.feedback.apply import apply_report
from mailworker.feedback.reports import read_report
from mailworker.settings import reload_settings
from mailworker.store import keys
from mailworker.tasks.app import configure_app
from mailworker.tasks.send import send_email
from tests.bounce_mail import arf, block, dsn
from tests.helpers import extra_account, messages_of, wait_for_status, wait_until, worker_process

QUEUE = f"events-{os.getpid()}"
EVENTS_QUEUE = f"eventapp-{os.getpid()}"
RECEIVED = "eventapp:received"  # tests/event_app.py keeps what it got here
EVENTS = {"EVENTS_TASK": "eventapp.on_mail_event", "EVENTS_QUEUE": EVENTS_QUEUE}
FILLER = 20


@pytest.fixture
def events_on(environment: dict[str, str], redis: Any) -> Iterator[None]:
    """EVENTS_TASK for this process (the producer), a mailworker worker and the app's worker."""
    redis.delete(RECEIVED, keys.EVENTS)
    os.environ.update(EVENTS)
    configure_app(reload_settings())
    app_worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.event_app", "worker", "-Q", EVENTS_QUEUE,
         "--pool", "threads", "-c", "2", "--loglevel", "WARNING", "--without-gossip",
         "--without-mingle", "-n", f"eventapp-{os.getpid()}@%h"],
        env={**os.environ, "EVENT_TASK_SECONDS": "0.2"},
    )  # fmt: skip
    try:
        with worker_process(QUEUE, EVENTS):
            yield
    finally:
        app_worker.kill()
        app_worker.wait(10)
        for name in EVENTS:
            os.environ.pop(name, None)
        configure_app(reload_settings())


def received(redis: Any) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in redis.lrange(RECEIVED, 0, -1)]


@pytest.mark.usefixtures("events_on")
def test_every_outcome_reaches_the_apps_task_once_while_delivery_runs_at_full_speed(
    starttls_server: DevServer, redis: Any
) -> None:
    def send(to: str, **extra: Any) -> Any:
        kwargs = {"to": to, "subject": "Receipt", "text": "x", **extra}
        return send_email.apply_async(kwargs=kwargs, queue=QUEUE)

    kept = send("kept@example.com", tags={"order": "17"})
    later, angry = send("later@example.com"), send("angry@example.com")
    started = time.monotonic()
    filler = [send(f"f{i}@example.com").id for i in range(FILLER)]
    for job_id in [kept.id, later.id, angry.id, *filler]:
        wait_for_status(job_id, "sent", timeout=30)
    delivered_in = time.monotonic() - started
    owed = 2 * (FILLER + 3)  # queued and sent for every job
    # The app's task takes 0.2 s per event on 2 threads: it is still far behind.
    assert len(received(redis)) < owed / 2, "delivery waited for the app's slow task"
    assert delivered_in < 10

    [later_copy] = messages_of(starttls_server, later.id)
    [angry_copy] = messages_of(starttls_server, angry.id)
    unknown = block("later@example.com", "failed", "5.1.1", "550 5.1.1 User unknown")
    apply_report(read_report(dsn(later_copy.data.decode(), unknown)), "dsn")
    apply_report(read_report(arf(angry_copy.data.decode(), "angry@example.com")), "arf")

    expected = {
        kept.id: {"queued", "sent"},
        later.id: {"queued", "sent", "bounced"},
        angry.id: {"queued", "sent", "complained"},
    }
    total = owed + 2

    ours = {kept.id, later.id, angry.id, *filler}  # a job another test left may emit too

    def mine_only() -> list[dict[str, Any]]:
        return [e for e in received(redis) if e["job_id"] in ours]

    wait_until(lambda: len({e["id"] for e in mine_only()}) >= total, 60,
               "every event at the app's task")  # fmt: skip
    events = mine_only()
    unique = {e["id"]: e for e in events}
    assert len(unique) == total
    for job_id, types in expected.items():
        mine = [e for e in unique.values() if e["job_id"] == job_id]
        assert Counter(e["type"] for e in mine) == Counter(types), mine
    bounced = next(e for e in unique.values() if e["type"] == "bounced")
    assert (bounced["recipient"], bounced["code"], bounced["account"]) == (
        "later@example.com", "5.1.1", "default")  # fmt: skip
    sent = next(e for e in unique.values() if e["job_id"] == kept.id and e["type"] == "sent")
    assert sent["tags"] == {"order": "17"} and sent["code"] == "250"
    assert set(sent) >= {"id", "type", "job_id", "recipient", "account", "campaign", "tags",
                         "code", "at"}  # fmt: skip
    assert "subject" not in json.dumps(events).lower() and "Receipt" not in json.dumps(events)
    # Published means deleted: the outbox holds nothing once the app has it all.
    wait_until(lambda: redis.xlen(keys.EVENTS) == 0, 10, "the outbox emptied")


@pytest.mark.usefixtures("events_on")
def test_a_campaign_tells_the_app_who_got_it_and_who_bounced(server: DevServer, redis: Any) -> None:
    from mailworker.tasks.campaign import start_campaign

    def refuse_nobody(command: str, argument: object, _: Any) -> Reply | None:
        if command == "RCPT" and "nobody@" in str(argument):
            return Reply("550 5.1.1 <nobody@example.com>: Recipient address rejected")
        return None

    server.fault = refuse_nobody
    env = {**EVENTS, "SMTP_URL_EVBULK": server.url()}
    with extra_account("evbulk", server.url()), worker_process("bulk", env, name="events"):
        readers = [
            {"email": a} for a in ("one@example.com", "nobody@example.com", "two@example.com")
        ]
        campaign = start_campaign({"subject": "News", "text": "Hello"}, readers, account="evbulk")

        def mine() -> dict[str, Any]:
            return {e["id"]: e for e in received(redis) if e["campaign"] == campaign}

        wait_until(lambda: len(mine()) >= 3, 60, "the campaign's three events")
    found = mine()
    assert {(e["type"], e["recipient"], e["job_id"]) for e in found.values()} == {
        ("sent", "one@example.com", f"{campaign}-0"),
        ("bounced", "nobody@example.com", f"{campaign}-1"),
        ("sent", "two@example.com", f"{campaign}-2"),
    }
    assert next(e for e in found.values() if e["type"] == "bounced")["code"] == "550"
