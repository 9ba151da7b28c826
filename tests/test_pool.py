"""Pooled connections live across tasks: few connections, recycled, probed, never leaked."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import trustme

from mailworker.dev.devserver import DevServer, RecordingSMTP, Reply
from tests.conftest import PASSWORD, USER
from tests.helpers import extra_account, messages_of, send_many, wait_all_sent, wait_for_status

pytestmark = pytest.mark.usefixtures("celery_worker")


@pytest.mark.slow
def test_200_messages_through_a_pool_of_2_use_at_most_2_connections(server: DevServer) -> None:
    with extra_account("pool2", server.url() + "?max_connections=2&max_messages=1000"):
        wait_all_sent(send_many(200, "pool2"))
    assert len(server.messages) == 200
    assert server.log.connections <= 2
    assert server.log.commands["AUTH"] == server.log.connections


@pytest.mark.slow
def test_max_messages_recycles_the_connection_every_50(server: DevServer) -> None:
    with extra_account("recycle", server.url() + "?max_connections=1&max_messages=50"):
        wait_all_sent(send_many(200, "recycle"))
    per_connection = Counter(m.connection for m in server.messages)
    assert sorted(per_connection.values()) == [50, 50, 50, 50]
    assert server.log.commands["QUIT"] >= 3  # each full connection said goodbye


@pytest.mark.slow
def test_server_dropping_idle_connections_loses_nothing(
    certificate_dir: Path, ca: trustme.CA
) -> None:
    import time

    with (
        DevServer(
            tls="starttls",
            users={USER: PASSWORD},
            ca=ca,
            idle_timeout=1.0,
            certificate_dir=certificate_dir,
        ) as server,
        extra_account("idle", server.url() + "?max_connections=1"),
    ):
        for _ in range(3):
            [job_id] = send_many(1, "idle")
            record = wait_for_status(job_id, "sent", "deferred", "failed")
            assert record["state"] == "sent" and record["attempt"] == 1
            time.sleep(2)
        assert len(server.messages) == 3
        assert server.log.connections == 3  # each pause cost the session, never a message


def test_421_mid_transaction_is_resent_once_on_a_new_connection(server: DevServer) -> None:
    failed: list[tuple[int, bytes]] = []

    def fail_second_data(command: str, _: object, session: RecordingSMTP) -> Reply | None:
        if command == "DATA" and server.log.commands["DATA"] == 2:
            failed.append((session.connection_id, session.envelope.original_content or b""))
            return Reply("421 4.3.0 Service shutting down, closing channel", close=True)
        return None

    server.fault = fail_second_data
    with extra_account("flaky", server.url() + "?max_connections=1"):
        job_ids = send_many(2, "flaky")
        wait_all_sent(job_ids)
    [(connection, refused_data)] = failed
    [victim] = [job_id for job_id in job_ids if job_id.encode() in refused_data]
    [delivered] = messages_of(server, victim)
    assert delivered.connection != connection
    assert len(server.messages) == 2


def test_a_failed_transaction_is_reset_before_the_session_is_reused(server: DevServer) -> None:
    def refuse_first_rcpt(command: str, _: object, __: RecordingSMTP) -> Reply | None:
        if command == "RCPT" and server.log.commands["RCPT"] == 1:
            return Reply("550 5.1.1 No such user")
        return None

    server.fault = refuse_first_rcpt
    with extra_account("reset", server.url() + "?max_connections=1"):
        first, second = send_many(2, "reset")
        assert wait_for_status(first, "failed", "sent")["state"] == "failed"
        wait_all_sent([second])
    assert server.log.connections == 1
    assert server.log.commands["RSET"] >= 1
