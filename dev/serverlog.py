"""What the development server records and how a test makes it misbehave: the types
:mod:`mailworker.dev.devserver` shares with the tests (re-exported there)."""

from __future__ import annotations

import email
import email.policy
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailworker.dev.chunking import ChunkingSMTP


@dataclass(frozen=True)
class Reply:
    """What a fault makes the server answer; ``close`` drops the connection after it.

    ``Reply(None, close=True)`` drops the connection without answering or processing.
    """

    text: str | None
    close: bool = False


# (command, argument, server) -> a Reply to inject, or None to behave normally.
Fault = Callable[[str, Any, ChunkingSMTP], Reply | None]  # the session: a RecordingSMTP


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    connection: int
    tls: bool
    user: str | None
    received_at: float

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


@dataclass
class ServerLog:
    """Everything the server saw; read it from any thread."""

    messages: list[ReceivedMessage] = field(default_factory=list)
    commands: Counter[str] = field(default_factory=Counter)
    reads: int = 0  # chunks received from clients: pipelined commands arrive in one
    connections: int = 0
    open_connections: int = 0
    max_concurrent: int = 0
    plaintext_auth_attempts: int = 0
    live: set[ChunkingSMTP] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def wait_for_messages(self, count: int, timeout: float = 30.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages arrived; return them all."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)
