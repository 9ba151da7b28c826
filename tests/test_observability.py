"""Sentry, logs and metrics from a real worker process: the real sentry-sdk posts to a local
HTTP endpoint used as the DSN, the worker serves Prometheus metrics and writes JSON logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from mailworker.dev.devserver import DevServer, RecordingSMTP, Reply, free_port
from mailworker.tasks import send_email, status
from tests.conftest import PASSWORD, USER
from tests.helpers import extra_account, wait_for_status, wait_until, worker_process
from tests.sentry_sink import SentrySink

QUEUE = "observed"
SUBJECT = "Quarterly-Zebra-Subject-5521"
BODY = "Body-Marmalade-8837, for your eyes only"
BAD_PASSWORD = "Wrong-Pw-Pelican-4410"


class Observed:
    def __init__(self, sink: SentrySink, metrics_port: int, log_file: Path) -> None:
        self.sink = sink
        self.metrics_port = metrics_port
        self.log_file = log_file

    def events(self, account: str) -> list[dict[str, Any]]:
        return [e for e in self.sink.events() if e.get("tags", {}).get("account") == account]

    def wait_for_events(self, account: str, count: int, timeout: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.events(account)) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # and nothing more arrives
        return self.events(account)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
            return response.read().decode()


def _misbehave() -> Any:
    refused_once: set[str] = set()
    lock = threading.Lock()

    def fault(command: str, argument: Any, _: RecordingSMTP) -> Reply | None:
        if command != "RCPT":
            return None
        address = str(argument)
        if "nobody" in address:
            return Reply(f"550 5.1.1 <{address}>: Recipient address rejected: User unknown")
        if "always-busy" in address:
            return Reply("451 4.3.0 Mailbox temporarily unavailable")
        with lock:
            if "flaky" in address and address not in refused_once:
                refused_once.add(address)
                return Reply("451 4.3.0 Temporary local problem, try again in 1 seconds")
        return None

    return fault


@pytest.fixture(scope="module")
def observed(
    environment: dict[str, str], certificate_dir: Path, ca: Any, tmp_path_factory: Any
) -> Iterator[Observed]:
    server = DevServer(users={USER: PASSWORD}, ca=ca, certificate_dir=certificate_dir)
    server.fault = _misbehave()
    sink = SentrySink().start()
    port = free_port()
    log_file = tmp_path_factory.mktemp("logs") / "worker.log"
    accounts = {
        "obs": server.url(),
        "many": server.url(),
        "flaky": server.url(),
        "counted": server.url(),
        "stuck": server.url(),
        "refused": server.url(USER, BAD_PASSWORD),
    }
    env = {
        "SENTRY_DSN": sink.dsn,
        "METRICS_PORT": str(port),
        "LOG_FORMAT": "json",
        "SENTRY_FAILING_AFTER_SECONDS": "1.5",
        **{f"SMTP_URL_{name.upper()}": url for name, url in accounts.items()},
    }
    with server, ExitStack() as stack, log_file.open("wb") as log:
        for name, url in accounts.items():
            stack.enter_context(extra_account(name, url))
        stack.enter_context(worker_process(QUEUE, env, loglevel="INFO", log_file=log))
        yield Observed(sink, port, log_file)
    sink.stop()


def _send(account: str, to: str) -> str:
    kwargs = {"to": to, "subject": SUBJECT, "text": BODY, "account": account}
    return send_email.apply_async(kwargs=kwargs, queue=QUEUE).id


def test_a_550_sends_exactly_one_event_without_personal_data(observed: Observed) -> None:
    job_id = _send("obs", "nobody-ferdinand@example.com")
    wait_for_status(job_id, "failed", timeout=30)
    [event] = observed.wait_for_events("obs", 1)
    assert event["fingerprint"] == ["mailworker", "obs", "bounce", "550"]
    tags = event["tags"]
    assert tags["smtp_code"] == "550" and tags["enhanced_code"] == "5.1.1"
    assert tags["queue"] == QUEUE and tags["attempt"] == "1" and tags["failure"] == "bounce"
    assert event["extra"]["job_id"] == job_id
    raw = observed.sink.all_bytes()
    for secret in ("nobody-ferdinand", SUBJECT, "Marmalade", PASSWORD, BAD_PASSWORD):
        assert secret.encode() not in raw, secret


def test_a_hundred_failures_of_one_kind_are_one_sentry_issue(observed: Observed) -> None:
    job_ids = [_send("many", f"nobody-{i}@example.com") for i in range(100)]
    for job_id in job_ids:
        wait_for_status(job_id, "failed", timeout=60)
    events = observed.wait_for_events("many", 100)
    assert len(events) == 100
    assert {tuple(e["fingerprint"]) for e in events} == {("mailworker", "many", "bounce", "550")}


def test_a_transient_451_that_later_succeeds_sends_no_event(observed: Observed) -> None:
    job_id = _send("flaky", "flaky-gus@example.com")
    record = wait_for_status(job_id, "sent", timeout=30)
    assert record["attempt"] == 2
    assert observed.wait_for_events("flaky", 1, timeout=2) == []


def test_an_authentication_pause_sends_one_event_naming_the_account(
    observed: Observed,
) -> None:
    job_ids = [_send("refused", f"reader{i}@example.com") for i in range(3)]
    for job_id in job_ids:
        wait_for_status(job_id, "paused", timeout=30)
    [event] = observed.wait_for_events("refused", 1)
    assert event["tags"]["failure"] == "paused" and event["tags"]["smtp_code"] == "535"
    assert "refused" in event["message"] or "refused" in json.dumps(event.get("logentry", {}))
    assert BAD_PASSWORD.encode() not in observed.sink.all_bytes()


def test_metrics_and_logs_report_what_was_sent(observed: Observed) -> None:
    job_ids = [_send("counted", f"reader{i}@example.com") for i in range(3)]
    for job_id in job_ids:
        wait_for_status(job_id, "sent", timeout=30)
    metrics = observed.metrics()
    assert 'mailworker_messages_total{account="counted",outcome="sent"} 3.0' in metrics
    assert 'mailworker_send_seconds_count{account="counted"} 3.0' in metrics
    assert re.search(r'mailworker_pool_sessions\{account="counted",state="open"\} [1-9]', metrics)
    assert 'outcome="bounced"} 1.0' in metrics  # the 550 of the first test

    def attempts() -> list[dict[str, Any]]:
        # Celery's start-up banner and Python warnings are plain text; every record is JSON.
        text = observed.log_file.read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("job_id") in job_ids]

    wait_until(lambda: len(attempts()) >= 3, 10, "one log line per attempt")
    text = observed.log_file.read_text()
    assert len(attempts()) == 3
    assert {a["outcome"] for a in attempts()} == {"delivered"}
    assert all(a["account"] == "counted" and a["smtp_code"] == 250 for a in attempts())
    for secret in ("reader0@example.com", "nobody-ferdinand", SUBJECT, PASSWORD, BAD_PASSWORD):
        assert secret not in text, secret


def test_an_account_failing_past_the_threshold_sends_one_event(observed: Observed) -> None:
    job_id = _send("stuck", "always-busy@example.com")
    deadline = time.monotonic() + 30
    failing: list[dict[str, Any]] = []
    while not failing and time.monotonic() < deadline:
        failing = [e for e in observed.events("stuck") if e["tags"]["failure"] == "failing"]
        time.sleep(0.2)
    time.sleep(3)  # more transient failures follow: no second event
    failing = [e for e in observed.events("stuck") if e["tags"]["failure"] == "failing"]
    assert len(failing) == 1
    assert failing[0]["fingerprint"] == ["mailworker", "stuck", "failing", "451"]
    assert failing[0]["level"] == "warning"
    assert "always-busy" not in json.dumps(failing[0])
    assert status(job_id)["state"] in ("deferred", "failed")


def test_a_producer_with_a_dsn_reports_through_the_same_scrubber(observed: Observed) -> None:
    script = (
        "import sentry_sdk; from tasks import send_email\n"
        "send_email.delay(to='ann@example.com', subject='s', text='t', account='counted')\n"
        "assert sentry_sdk.get_client().is_active()\n"
        "sentry_sdk.capture_message('producer saw Producer-Leak-3307@example.com')\n"
        "sentry_sdk.flush(5)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "SENTRY_DSN": observed.sink.dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    raw = observed.sink.all_bytes()
    assert b"producer saw [email]" in raw and b"Producer-Leak-3307" not in raw


def test_json_logs_mask_addresses_in_every_field(observed: Observed) -> None:
    """A job published without mailworker's kwargsrepr (another producer, an old client):
    Celery logs its arguments in the ``data`` field of the "received" record."""
    from mailworker.settings import get_settings
    from mailworker.tasks.app import SEND_EMAIL_TASK, app
    from mailworker.tasks.validation import build_job

    kwargs = {"to": "Json-Field-Heron@example.com", "subject": "s", "text": "t"}
    job = build_job(get_settings(), {**kwargs, "account": "counted"})
    app.send_task(SEND_EMAIL_TASK, kwargs={"job": job.to_payload()}, task_id=job.id, queue=QUEUE)
    wait_for_status(job.id, "sent", timeout=30)

    def received() -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for line in observed.log_file.read_text().splitlines()
            if line.startswith("{") and job.id in line and "received" in line
        ]

    wait_until(received, 10, "the job's 'received' log line")
    text = observed.log_file.read_text()
    assert "[email]" in json.dumps(received()[0]["data"])
    assert "Json-Field-Heron" not in text


def _answers(host: str, port: int, wait: float = 0) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5):  # noqa: S310
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def test_metrics_listen_on_loopback_unless_metrics_host_says_otherwise(
    observed: Observed, environment: dict[str, str]
) -> None:
    """127.0.0.2 is loopback too (Linux routes 127/8 to lo): a wildcard listener answers
    there, one bound to 127.0.0.1 does not."""
    assert _answers("127.0.0.1", observed.metrics_port, wait=30)
    assert not _answers("127.0.0.2", observed.metrics_port)
    port = free_port()
    env = {"METRICS_PORT": str(port), "METRICS_HOST": "127.0.0.2"}
    with worker_process("metrics-host", env):
        assert _answers("127.0.0.2", port, wait=30) and not _answers("127.0.0.1", port)


def test_task_events_are_off_until_a_monitor_turns_them_on(environment: dict[str, str]) -> None:
    """Task events cost a Redis PUBLISH per task state (13% of a busy worker's samples):
    off by default, and Flower (its ``enable_events``, on by default) or celery-exporter
    (``--enable-events``) turn them on at a running worker."""
    import socket

    from mailworker.worker import app

    assert app.conf.worker_send_task_events is False
    assert app.conf.task_send_sent_event is False
    queue = "events-probe"
    host = [f"{queue}-{os.getpid()}@{socket.gethostname()}"]
    seen: list[dict[str, Any]] = []
    with worker_process(queue, environment), app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": seen.append})
        listening = threading.Thread(target=receiver.capture, kwargs={"wakeup": False})
        listening.start()
        wait_until(lambda: app.control.ping(destination=host, timeout=0.5), 30, "worker up")
        quiet = send_email.apply_async(
            kwargs={"to": "quiet@example.com", "subject": "s", "text": "x"}, queue=queue
        )
        wait_for_status(quiet.id, "sent")
        replies = app.control.enable_events(destination=host, reply=True, timeout=5)
        assert replies == [{host[0]: {"ok": "task events enabled"}}]
        try:
            loud = send_email.apply_async(
                kwargs={"to": "loud@example.com", "subject": "s", "text": "x"}, queue=queue
            )
            wait_for_status(loud.id, "sent")
            wait_until(
                lambda: any(e["type"] == "task-succeeded" and e.get("uuid") == loud.id
                            for e in seen), 10, "a task event",
            )  # fmt: skip
        finally:
            app.control.disable_events(destination=host, reply=True, timeout=5)
            receiver.should_stop = True
            listening.join(10)
    # One worker publishes in order: had the quiet job sent a task event, it would have
    # arrived before the loud job's (no window to wait out).
    assert not [e for e in seen if e["type"].startswith("task-") and e.get("uuid") != loud.id]
