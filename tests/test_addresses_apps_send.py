"""Addresses and headers as apps really write them, through ``send_email.delay()`` and a
real worker to a real TLS + AUTH server: what arrives parses back, with Python's own email
parser, to what the caller meant. And what is genuinely ambiguous is refused at enqueue."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from mailworker.dev.devserver import DevServer, ReceivedMessage
from mailworker.settings import get_settings
from mailworker.settings.mailboxes import AddressError, parse_mailbox
from mailworker.tasks import InvalidEmail, send_email
from tests.helpers import wait_until


def delivered(server: DevServer, job_id: str) -> ReceivedMessage:
    found: list[ReceivedMessage] = []

    def arrived() -> bool:
        found[:] = [m for m in server.messages if job_id.encode() in m.data]
        return bool(found)

    wait_until(arrived, 20, f"job {job_id} delivered")
    [message] = found
    return message


def shown(message: ReceivedMessage, header: str) -> list[tuple[str, str]]:
    """(display name, address) of each mailbox in ``header``, as the stdlib parses it."""
    return [(a.display_name, a.addr_spec) for a in message.message[header].addresses]


def tag() -> str:
    return uuid.uuid4().hex[:8]


# (keyword arguments, header, the mailboxes a reader sees there)
CASES: list[tuple[dict[str, Any], str, list[tuple[str, str]]]] = [
    ({"to": "Zoë <zoe@example.com>"}, "To", [("Zoë", "zoe@example.com")]),
    ({"to": ["José <jose@example.com>", "Ann <ann@example.com>"]}, "To",
     [("José", "jose@example.com"), ("Ann", "ann@example.com")]),
    ({"from_email": "Jörg Müller <app@example.com>"}, "From", [("Jörg Müller", "app@example.com")]),
    ({"cc": "Đorđe Šćepanović <dj@example.com>"}, "Cc",
     [("Đorđe Šćepanović", "dj@example.com")]),
    ({"reply_to": "J. R. Smith <js@example.com>"}, "Reply-To",
     [("J. R. Smith", "js@example.com")]),
    ({"to": '"Müller, Jörg" <jm@example.com>'}, "To", [("Müller, Jörg", "jm@example.com")]),
    ({"to": "李雷 <li@example.com>"}, "To", [("李雷", "li@example.com")]),
    ({"to": "plain@example.com", "headers": {"To": "Our team <team@example.com>"}}, "To",
     [("Our team", "team@example.com")]),
    ({"to": "a@example.com", "headers": {"Cc": "Zoë <z@example.com>, Bo <b@example.com>"}},
     "Cc", [("Zoë", "z@example.com"), ("Bo", "b@example.com")]),
    ({"to": "a@example.com", "headers": {"Reply-To": "Desk <desk@example.com>"}}, "Reply-To",
     [("Desk", "desk@example.com")]),
    ({"to": "a@example.com", "headers": {"From": "Jörg <jorg@example.com>"}}, "From",
     [("Jörg", "jorg@example.com")]),
]  # fmt: skip


@pytest.mark.parametrize(("arguments", "header", "expected"), CASES)
def test_what_arrives_parses_back_to_what_the_caller_meant(
    starttls_server: DevServer,
    celery_worker: Any,
    arguments: dict[str, Any],
    header: str,
    expected: list[tuple[str, str]],
) -> None:
    arguments = {"to": "someone@example.com", **arguments}
    result = send_email.delay(subject=f"Grüße {tag()}", text="Hallo", **arguments)
    message = delivered(starttls_server, result.id)
    assert shown(message, header) == expected
    if "headers" in arguments:  # a displayed header never changes who receives the message
        envelope = arguments["to"] if isinstance(arguments["to"], list) else [arguments["to"]]
        assert list(message.rcpt_tos) == envelope
        assert message.mail_from == get_settings().default_from_email.rpartition("<")[2][:-1]


def test_a_callers_message_id_is_kept_on_every_attempt(
    starttls_server: DevServer, celery_worker: Any
) -> None:
    message_id = f"<order-{tag()}@shop.example.com>"
    result = send_email.delay(
        to="mid@example.com", subject="Order", text="x", headers={"Message-ID": message_id}
    )
    arrived = delivered(starttls_server, message_id.strip("<>"))
    assert arrived.message["Message-ID"] == message_id
    assert result.id not in arrived.message["Message-ID"]


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"to": "Müller, Jörg <j@example.com>"}, "quote it"),
        ({"to": "Ann (work) <a@example.com>"}, "quote it"),
        ({"to": "root@localhost"}, "ALLOW_LOCAL_DOMAINS=true"),
        ({"to": "dev@box.test"}, "ALLOW_LOCAL_DOMAINS=true"),
        ({"to": "x@service.invalid"}, "special-use"),
        ({"headers": {"Date": "Mon, 1 Jan 2024 00:00:00 +0000"}}, "set by mailworker"),
        ({"headers": {"Message-ID": "no-brackets@example.com"}}, "<left@right>"),
        ({"headers": {"Message-ID": "<a@b>\r\nBcc: x@example.com"}}, "control characters"),
        ({"headers": {"To": "Müller, Jörg <j@example.com>"}}, "not a valid address"),
    ],
)
def test_ambiguous_or_unsendable_input_is_refused_at_enqueue(
    arguments: dict[str, Any], says: str
) -> None:
    with pytest.raises(InvalidEmail, match=says.replace(".", r"\.").replace("(", r"\(")):
        send_email.delay(**{"to": "ok@example.com", "subject": "s", "text": "x", **arguments})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("root@localhost", ("", "root@localhost")),
        ("Dev <dev@box.test>", ("Dev", "dev@box.test")),
        ("Zoë <printer@office.local>", ("Zoë", "printer@office.local")),
        ("ops@api.internal", ("", "ops@api.internal")),
        ("Ops@API.Internal", ("", "Ops@api.internal")),
    ],
)
def test_local_domains_pass_where_allowed(value: str, expected: tuple[str, str]) -> None:
    assert parse_mailbox(value, local_domains=True) == expected
    if not value.lower().endswith(".internal"):  # not a special-use name to email-validator
        with pytest.raises(AddressError, match="ALLOW_LOCAL_DOMAINS"):
            parse_mailbox(value)


@pytest.mark.parametrize(
    "value", ["x@service.invalid", "x@abc.onion", "a b@localhost", "@localhost"]
)
def test_local_domains_never_let_a_broken_or_reserved_address_through(value: str) -> None:
    with pytest.raises(AddressError):
        parse_mailbox(value, local_domains=True)
