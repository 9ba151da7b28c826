"""CHUNKING (RFC 3030) with PIPELINING: MAIL FROM, RCPT TO, ``BDAT <size> LAST`` and the
content in one write, one round trip per message, against a real server that offers it
(the dev server's BDAT, dev/chunking.py); each RCPT reply still judged on its own, and a
server without CHUNKING, or an account with ``chunking=off``, gets DATA as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from mailworker.dev.devserver import DevServer, RecordingSMTP, Reply
from mailworker.tasks import send_email
from tests.conftest import PASSWORD, USER
from tests.helpers import extra_account, messages_of, send_many, wait_all_sent, wait_for_status
from tests.raw_smtp import RawSmtpServer
from tests.test_pipelining import assert_lines_with_dots_arrive_intact

pytestmark = pytest.mark.usefixtures("celery_worker")


@pytest.fixture
def chunking_server(certificate_dir: Path, ca: trustme.CA) -> Iterator[DevServer]:
    with DevServer(tls="starttls", users={USER: PASSWORD}, ca=ca, certificate_dir=certificate_dir,
                   chunking=True) as server:  # fmt: skip
        yield server


def _writes_for(server: DevServer, account: str, url: str, count: int) -> int:
    """Chunks the server read to take ``count`` messages over one warm connection."""
    connections = server.log.connections
    with extra_account(account, url + ("&" if "?" in url else "?") + "max_connections=1"):
        wait_all_sent(send_many(1, account))  # connect, TLS, AUTH: not counted below
        before = server.log.reads
        wait_all_sent(send_many(count, account))
    assert server.log.connections == connections + 1
    return server.log.reads - before


def test_one_write_per_message_with_chunking_and_two_without(
    chunking_server: DevServer, server: DevServer
) -> None:
    chunked = _writes_for(chunking_server, "chunked", chunking_server.url(), 20)
    pipelined = _writes_for(server, "notchunked", server.url(), 20)
    switched_off = chunking_server.log.commands["BDAT"]
    off = _writes_for(chunking_server, "chunkoff", chunking_server.url() + "?chunking=off", 20)
    # One write (envelope, BDAT and content) per message; without CHUNKING, two.
    assert chunked <= 20 + 2, chunked
    assert pipelined >= 2 * 20 and off >= 2 * 20
    assert chunking_server.log.commands["BDAT"] == switched_off  # chunking=off: DATA only
    assert chunking_server.log.commands["DATA"] == 21 + 21  # BDAT LAST reaches the DATA hook


def test_the_content_arrives_byte_for_byte_without_dot_stuffing(chunking_server: DevServer) -> None:
    assert_lines_with_dots_arrive_intact(chunking_server, "chunkdots")
    assert chunking_server.log.commands["BDAT"] >= 1


def test_a_refused_rcpt_fails_only_that_recipient_and_all_refused_sends_nothing(
    chunking_server: DevServer,
) -> None:
    def refuse(command: str, argument: object, _: RecordingSMTP) -> Reply | None:
        if command == "RCPT" and ("gone@" in str(argument) or "nobody@" in str(argument)):
            return Reply("550 5.1.1 no such user")
        return None

    chunking_server.fault = refuse
    with extra_account("chunkrcpt", chunking_server.url() + "?max_connections=1"):
        some = send_email.delay(to=["a@example.com", "gone@example.com", "b@example.com"],
                                subject="s", text="t", account="chunkrcpt")  # fmt: skip
        record = wait_for_status(some.id, "sent", "failed")
        none = send_email.delay(to="nobody@example.com", subject="s", text="t",
                                account="chunkrcpt")  # fmt: skip
        assert wait_for_status(none.id, "failed", "sent")["state"] == "failed"
        after = send_many(2, "chunkrcpt")  # the session stayed in step
        wait_all_sent(after)
    [delivered] = messages_of(chunking_server, some.id)
    assert sorted(delivered.rcpt_tos) == ["a@example.com", "b@example.com"]
    assert record["recipients"]["gone@example.com"].startswith("bounced 550")
    assert messages_of(chunking_server, none.id) == []
    assert all(len(messages_of(chunking_server, job_id)) == 1 for job_id in after)
    assert chunking_server.log.connections == 1


def test_replies_split_across_reads_and_a_postfix_421_with_chunking(ca: trustme.CA) -> None:
    """A Postfix-like raw server offering CHUNKING writes every reply in two pieces: each is
    still read and judged on its own; a 421 to a RCPT of the first connection (Postfix's
    anvil, then close, the BDAT unanswered) costs a retry, never a duplicate."""

    def replies(connection: int, recipient: str) -> str | None:
        if "gone@" in recipient:
            return "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"
        if connection == 1 and "late@" in recipient:
            return "421 4.7.0 raw.example.com Error: too many connections"
        return None

    with RawSmtpServer(ca, replies, chunking=True, split_replies=True) as raw, \
            extra_account("rawchunk", raw.url()):  # fmt: skip
        some = send_email.delay(to=["a@example.com", "gone@example.com", "c@example.com"],
                                subject="s", text="t", account="rawchunk")  # fmt: skip
        record = wait_for_status(some.id, "sent", "failed")
        late = send_email.delay(to="late@example.com", subject="s", text="t", account="rawchunk")
        wait_for_status(late.id, "sent", timeout=30)
    outcomes = record["recipients"]
    assert (outcomes["a@example.com"], outcomes["c@example.com"]) == ("sent", "sent")
    assert outcomes["gone@example.com"].startswith("bounced 550")
    bodies = [data for _, _, data in raw.log.messages]
    assert sum(some.id.encode() in b for b in bodies) == 1
    assert sum(late.id.encode() in b for b in bodies) == 1  # retried, delivered once
    assert all(b"BDAT" not in b for b in bodies)  # the chunk is the message, nothing more
