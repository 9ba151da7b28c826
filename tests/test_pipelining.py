"""SMTP PIPELINING (RFC 2920): the envelope in one write where the server offers it, replies
still judged recipient by recipient, and the lock-step dialogue where it does not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from mailworker.dev.devserver import DevServer, Fault, RecordingSMTP, Reply
from mailworker.tasks import send_email
from tests.conftest import PASSWORD, USER
from tests.helpers import extra_account, messages_of, send_many, wait_all_sent, wait_for_status

pytestmark = pytest.mark.usefixtures("celery_worker")


@pytest.fixture
def lockstep_server(certificate_dir: Path, ca: trustme.CA) -> Iterator[DevServer]:
    with DevServer(
        tls="starttls",
        users={USER: PASSWORD},
        ca=ca,
        certificate_dir=certificate_dir,
        pipelining=False,
    ) as server:
        yield server


def _refuse_rcpt(needle: str) -> Fault:
    def refuse(command: str, argument: object, _: RecordingSMTP) -> Reply | None:
        if command == "RCPT" and needle in str(argument):
            return Reply("550 5.1.1 no such user")
        return None

    return refuse


def _reads_for(server: DevServer, account: str, count: int) -> int:
    """Chunks the server read to take ``count`` messages over one warm connection."""
    with extra_account(account, server.url() + "?max_connections=1"):
        wait_all_sent(send_many(1, account))  # connect, TLS, AUTH: not counted below
        before = server.log.reads
        wait_all_sent(send_many(count, account))
    assert len(server.messages) == count + 1
    assert server.log.connections == 1
    return server.log.reads - before


def test_pipelining_halves_the_round_trips_per_message(
    server: DevServer, lockstep_server: DevServer
) -> None:
    pipelined = _reads_for(server, "piped", 20)
    lockstep = _reads_for(lockstep_server, "lockstep", 20)
    # Lock-step: MAIL, RCPT, DATA, content = 4 client writes per message; pipelined: 2.
    assert lockstep >= 4 * 20
    assert pipelined <= 2 * 20 + 2


def test_a_refused_rcpt_in_a_pipelined_batch_fails_only_that_recipient(
    server: DevServer,
) -> None:
    def refuse_some(command: str, argument: object, _: RecordingSMTP) -> Reply | None:
        if command == "RCPT" and ("gone@" in str(argument) or "full@" in str(argument)):
            code = "550 5.1.1 no such user" if "gone@" in str(argument) else "452 4.2.2 full"
            return Reply(code)
        return None

    server.fault = refuse_some
    recipients = ["a@example.com", "gone@example.com", "b@example.com", "full@example.com"]
    with extra_account("pipedrcpt", server.url() + "?max_connections=1"):
        job = send_email.delay(to=recipients, subject="s", text="t", account="pipedrcpt")
        record = wait_for_status(job.id, "deferred", "sent", "failed")
    [delivered] = messages_of(server, job.id)
    assert sorted(delivered.rcpt_tos) == ["a@example.com", "b@example.com"]
    assert record["recipients"]["gone@example.com"].startswith("bounced 550")
    assert record["recipients"]["a@example.com"] == "sent"
    assert record["recipients"]["b@example.com"] == "sent"
    assert record["recipients"]["full@example.com"] != "sent"


def test_every_rcpt_refused_resets_the_session_and_the_next_message_uses_it(
    server: DevServer,
) -> None:
    server.fault = _refuse_rcpt("nobody@")
    with extra_account("pipednone", server.url() + "?max_connections=1"):
        refused = send_email.delay(
            to="nobody@example.com", subject="s", text="t", account="pipednone"
        )
        assert wait_for_status(refused.id, "failed", "sent")["state"] == "failed"
        wait_all_sent(send_many(2, "pipednone"))
    assert server.log.connections == 1
    assert server.log.commands["RSET"] >= 1
    assert len(server.messages) == 2


def test_421_to_a_pipelined_mail_from_is_retried_and_delivered_once(server: DevServer) -> None:
    closed: list[int] = []

    def close_on_first_mail(command: str, _: object, session: RecordingSMTP) -> Reply | None:
        if command == "MAIL" and not closed:
            closed.append(session.connection_id)
            return Reply("421 4.3.2 System not accepting network messages", close=True)
        return None

    server.fault = close_on_first_mail
    with extra_account("piped421", server.url()):
        [job_id] = send_many(1, "piped421")
        wait_all_sent([job_id])
    assert len(messages_of(server, job_id)) == 1
    assert messages_of(server, job_id)[0].connection != closed[0]


def test_a_server_without_pipelining_gets_the_lock_step_dialogue(
    lockstep_server: DevServer,
) -> None:
    lockstep_server.fault = _refuse_rcpt("nobody@")
    with extra_account("lockstep2", lockstep_server.url()):
        job = send_email.delay(
            to=["ann@example.com", "nobody@example.com", "bob@example.com"],
            subject="s",
            text=".leading dot\n.\nlast line",
            account="lockstep2",
        )
        record = wait_for_status(job.id, "sent", "failed")
    [delivered] = messages_of(lockstep_server, job.id)
    assert sorted(delivered.rcpt_tos) == ["ann@example.com", "bob@example.com"]
    assert record["recipients"]["nobody@example.com"].startswith("bounced 550")


def test_dot_stuffing_survives_the_pipelined_path(server: DevServer) -> None:
    assert_lines_with_dots_arrive_intact(server, "pipeddots")


def assert_lines_with_dots_arrive_intact(server: DevServer, account: str) -> None:
    """Lines that are a dot, or start with one, arrive as written (dot-stuffed on DATA,
    sent as they are with BDAT)."""
    text = ".leading dot\n.\n..two dots\nlast line"
    with extra_account(account, server.url()):
        job = send_email.delay(to="ann@example.com", subject="s", text=text, account=account)
        wait_all_sent([job.id])
    [delivered] = messages_of(server, job.id)
    assert delivered.message.get_content().replace("\r\n", "\n").rstrip("\n") == text
