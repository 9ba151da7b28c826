"""Routes: a job whose account cannot take it goes through the account's fallback at once,
exactly once, and back through the primary when it recovers; a refused recipient is never
tried elsewhere. Two real TLS + AUTH servers, a real worker, real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailworker.dev.devserver import DevServer, Fault, Reply
from mailworker.settings import SettingsError, load_settings
from mailworker.store.lifecycle import end_waiting
from mailworker.store.pauses import resume_account
from mailworker.tasks import send_email, status
from tests.conftest import _server
from tests.helpers import extra_account, wait_for_status, wait_until


@pytest.fixture
def backup(certificate_dir: Path, ca: trustme.CA) -> Iterator[DevServer]:
    running = _server(certificate_dir, ca, tls="implicit")
    yield running
    running.stop()


@contextmanager
def routed(primary: DevServer, backup: DevServer, route: str = "") -> Iterator[None]:
    with extra_account("backup", backup.url()):
        with extra_account("primary", f"{primary.url()}?fallback=backup{route}"):
            yield


def copies(server: DevServer, job_id: str) -> int:
    return sum(job_id.encode() in m.data for m in server.messages)


def send(count: int, tag: str) -> list[str]:
    return [
        send_email.delay(
            to=f"{tag}{n}@example.com", subject=f"{tag} {n}", text="x", account="primary"
        ).id
        for n in range(count)
    ]


def arrive_once_through(server: DevServer, other: DevServer, jobs: list[str], via: str) -> None:
    started = time.monotonic()
    for job_id in jobs:
        record = wait_for_status(job_id, "sent", timeout=20)
        assert record["via"] == via, record
    wait_until(lambda: all(copies(server, j) == 1 for j in jobs), 10, "every copy arrived")
    assert time.monotonic() - started < 20
    assert all(copies(server, j) == 1 and copies(other, j) == 0 for j in jobs)


def refuse_auth(command: str, argument: Any, session: Any) -> Reply | None:
    return Reply("535 5.7.8 Authentication credentials invalid") if command == "AUTH" else None


def busy_everything(command: str, argument: Any, session: Any) -> Reply | None:
    return Reply("421 4.3.2 Service not available, closing channel", close=True)


@pytest.mark.parametrize(
    ("trouble", "fault"),
    [
        ("refuses connections", None),
        ("answers 535", refuse_auth),
        ("421 to everything", busy_everything),
    ],
)
def test_jobs_go_through_the_backup_at_once_and_back_through_the_primary(
    server: DevServer, backup: DevServer, celery_worker: Any, trouble: str, fault: Fault | None
) -> None:
    with routed(server, backup):
        if fault is None:
            server.stop()
        else:
            server.fault = fault
        jobs = send(5, "outage")
        arrive_once_through(backup, server, jobs, "backup")
        # It recovers (an operator fixes the password and resumes a paused account).
        if fault is None:
            server.start()
        server.fault = None
        resume_account("primary")
        later = send(3, "recovered")
        arrive_once_through(server, backup, later, "primary")
        for job_id in jobs + later:
            assert status(job_id)["account"] == "primary"  # the job still names its primary


def test_a_refused_recipient_is_not_tried_at_the_backup(
    server: DevServer, backup: DevServer, celery_worker: Any
) -> None:
    def unknown_user(command: str, argument: Any, session: Any) -> Reply | None:
        if command == "RCPT" and "nobody" in str(argument):
            return Reply("550 5.1.1 <nobody@example.com>: Recipient address rejected")
        return None

    server.fault = unknown_user
    with routed(server, backup):
        job = send_email.delay(to="nobody@example.com", subject="s", text="x", account="primary")
        record = wait_for_status(job.id, "failed", timeout=20)
    assert record["via"] == "primary"
    assert backup.messages == [] and backup.log.connections == 0


def test_round_robin_spreads_jobs_over_the_accounts(
    server: DevServer, backup: DevServer, celery_worker: Any
) -> None:
    with routed(server, backup, "&route=roundrobin"):
        jobs = send(20, "spread")
        vias = [wait_for_status(j, "sent", timeout=30)["via"] for j in jobs]
    assert sorted(set(vias)) == ["backup", "primary"]
    assert min(vias.count("backup"), vias.count("primary")) >= 5
    assert sum(copies(server, j) + copies(backup, j) for j in jobs) == 20


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"SMTP_URL": "smtps://u:p@h:465?fallback=backup"}, "set SMTP_URL_BACKUP"),
        ({"SMTP_URL": "smtps://u:p@h:465?fallback=default"}, "fall back on itself"),
        ({"SMTP_URL": "smtps://u:p@h:465?route=roundrobin"}, "name them"),
        ({"SMTP_URL": "smtps://u:p@h:465?fallback=a&route=random"}, "route=failover"),
    ],
)
def test_a_route_that_cannot_work_is_refused_naming_the_variable(
    environ: dict[str, str], says: str
) -> None:
    with pytest.raises(SettingsError, match=says) as caught:
        load_settings({"REDIS_URL": "redis://localhost:6379/0", **environ})
    assert "SMTP_URL" in str(caught.value) and "u:p" not in str(caught.value)


def test_a_4xx_in_the_dialogue_fails_over_only_once_the_primary_has_failed_long_enough(
    server: DevServer, backup: DevServer, celery_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """451 at DATA: the session opened, so the primary may be fine for the next message.
    Within FAILOVER_AFTER_SECONDS the job retries at the primary; past it, the backup."""
    from mailworker.settings import reload_settings

    def busy_data(command: str, argument: Any, session: Any) -> Reply | None:
        return Reply("451 4.3.0 Try again later") if command == "DATA" else None

    server.fault = busy_data
    with routed(server, backup):
        first = send(1, "soon")[0]
        record = wait_for_status(first, "deferred", timeout=20)
        assert record["via"] == "primary" and backup.messages == []
        monkeypatch.setenv("FAILOVER_AFTER_SECONDS", "0")
        reload_settings()
        try:
            [later] = send(1, "later")
            assert wait_for_status(later, "sent", timeout=20)["via"] == "backup"
        finally:
            monkeypatch.delenv("FAILOVER_AFTER_SECONDS")
            reload_settings()
    assert copies(backup, later) == 1 and copies(server, later) == 0
    end_waiting(first, "cancelled", "test over")  # its retry names an account now gone
