"""A real SMTP server for development and tests: STARTTLS or implicit TLS, AUTH required.

Built on aiosmtpd with certificates from trustme (a throwaway CA written to disk so clients
can trust it through ``SMTP_CA_FILE``). It records every message and counts connections and
commands, and a ``fault`` callback can make it misbehave on purpose (4xx/5xx replies,
dropped connections) for tests. Needs the ``dev`` extra (aiosmtpd, trustme).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import itertools
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from mailworker.dev.chunking import ChunkingSMTP
from mailworker.dev.serverlog import Fault, ReceivedMessage, Reply, ServerLog

__all__ = ["DevServer", "Fault", "ReceivedMessage", "RecordingSMTP", "Reply", "ServerLog",
           "TlsMode", "free_port"]  # fmt: skip

TlsMode = Literal["starttls", "implicit", "none"]


class QuietSession(Session):
    """aiosmtpd's session without the warning aiosmtpd itself logs on every successful
    AUTH: it sets the deprecated ``login_data``, which nothing here reads."""

    login_data: Any = None  # a plain attribute in place of aiosmtpd's warning property


class RecordingSMTP(ChunkingSMTP):
    """aiosmtpd's SMTP session, plus BDAT, counting, fault injection and TLS-aware AUTH."""

    def __init__(
        self,
        handler: Any,
        *,
        log: ServerLog,
        faults: Callable[[], Fault | None],
        connection_id: int,
        counted: bool = True,
        pipelining: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.pipelining = pipelining
        self.counted = counted
        self.log = log
        self.faults = faults  # read per command: a test may change faults mid-session
        self.connection_id = connection_id
        self.user: str | None = None

    def _create_session(self) -> Session:
        return QuietSession(self.loop)

    @property
    def encrypted(self) -> bool:
        return self.transport is not None and (
            self._tls_protocol is not None
            or self.transport.get_extra_info("sslcontext") is not None
        )

    def connection_made(self, transport: Any) -> None:
        first = self.transport is None
        super().connection_made(transport)
        with self.log.lock:
            self.log.live.add(self)
        if first and self.counted:
            with self.log.lock:
                self.log.connections += 1
                self.log.open_connections += 1
                self.log.max_concurrent = max(self.log.max_concurrent, self.log.open_connections)

    def data_received(self, data: bytes) -> None:
        if self.counted:
            with self.log.lock:
                self.log.reads += 1
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        with self.log.lock:
            self.log.live.discard(self)
            if self.counted:
                self.log.open_connections -= 1
        super().connection_lost(error)

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        with self.log.lock:
            self.log.commands[command] += 1
        fault = self.faults()
        if fault is not None:
            reply = fault(command, args[0] if args else None, self)
            if reply is not None and reply.text is None and reply.close:
                # A dropped connection: no reply at all, nothing processed.
                cast(asyncio.Transport, self.transport).abort()
                return "421 4.4.2 connection dropped"  # written to a closed transport
            if reply is not None:
                if reply.close:
                    # Runs after the reply below is written; close() flushes it first.
                    self.loop.call_soon(cast(asyncio.Transport, self.transport).close)
                if reply.text is not None:
                    return reply.text
        return await super()._call_handler_hook(command, *args)


class RecordingHandler:
    def __init__(
        self,
        log: ServerLog,
        tokens: dict[str, str],
        on_message: Callable[[ReceivedMessage], None] | None = None,
    ) -> None:
        self.log = log
        self.tokens = tokens
        self.on_message = on_message

    async def handle_EHLO(
        self,
        server: RecordingSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if server.pipelining:
            # aiosmtpd reads commands one by one, so pipelined ones are simply queued;
            # advertise it as Postfix and the big providers do.
            responses.insert(-1, "250-PIPELINING")
        if server.chunking:
            responses.insert(-1, "250-CHUNKING")
        return responses

    async def handle_DATA(self, server: RecordingSMTP, session: Session, envelope: Envelope) -> str:
        received = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=envelope.original_content or b"",
            connection=server.connection_id,
            tls=server.encrypted,
            user=server.user,
            received_at=time.time(),
        )
        with self.log.changed:
            self.log.messages.append(received)
            self.log.changed.notify_all()
            count = len(self.log.messages)
        if self.on_message is not None:
            self.on_message(received)
        return f"250 2.0.0 Ok: queued as {count}"

    async def auth_XOAUTH2(self, server: RecordingSMTP, args: list[str]) -> AuthResult:
        if len(args) < 2:
            return AuthResult(success=False, handled=False)
        decoded = base64.b64decode(args[1]).decode()
        fields = dict(part.split("=", 1) for part in decoded.split("\x01") if "=" in part)
        user, token = fields.get("user"), fields.get("auth", "").removeprefix("Bearer ")
        ok = user is not None and self.tokens.get(user) == token and server.encrypted
        if ok:
            server.user = user
        return AuthResult(success=ok, handled=False)


class DevServer:
    """An SMTP server in a background thread. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        *,
        tls: TlsMode = "starttls",
        users: dict[str, str] | None = None,
        tokens: dict[str, str] | None = None,
        certificate_dir: Path | None = None,
        ca: Any | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        idle_timeout: float = 300.0,
        fault: Fault | None = None,
        advertise_auth_in_clear: bool = False,
        pipelining: bool = True,
        chunking: bool = False,  # BDAT (dev.chunking), off as in aiosmtpd
        on_message: Callable[[ReceivedMessage], None] | None = None,
    ) -> None:
        self.tls = tls
        self.users = dict(users or {})
        self.tokens = dict(tokens or {})
        self.host = host
        self.port = port or free_port(host)
        self.log = ServerLog()
        self.fault = fault
        self.on_message = on_message
        self._ids = itertools.count(1)
        self._idle_timeout = idle_timeout
        self._advertise_auth_in_clear = advertise_auth_in_clear
        self.pipelining, self.chunking = pipelining, chunking
        self._ca, self.ca_file, self._server_tls = _certificates(ca, certificate_dir, tls)
        self._controller: Controller | None = None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        scheme = {"starttls": "smtp+starttls", "implicit": "smtps", "none": "smtp+starttls"}
        if user is None and self.users:
            user, password = next(iter(self.users.items()))
        userinfo = f"{_quote(user)}:{_quote(password or '')}@" if user else ""
        return f"{scheme[self.tls]}://{userinfo}{self.host}:{self.port}"

    def start(self) -> DevServer:
        handler = RecordingHandler(self.log, self.tokens, self.on_message)
        kwargs: dict[str, Any] = {
            "server_hostname": "localhost",
            "enable_SMTPUTF8": True,
            "authenticator": self._authenticate,
            "auth_required": bool(self.users or self.tokens),
            "auth_require_tls": self.tls == "starttls" and not self._advertise_auth_in_clear,
            "timeout": self._idle_timeout,
        }
        if self.tls == "starttls":
            kwargs["tls_context"] = self._server_tls
            kwargs["require_starttls"] = True
        self._controller = _Controller(
            handler,
            self,
            hostname=self.host,
            port=self.port,
            ssl_context=self._server_tls if self.tls == "implicit" else None,
            **kwargs,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self.drop_connections()
            self._controller.stop()
            self._controller = None
            # aiosmtpd leaks the server side of sessions whose TLS handshake failed (a client
            # that rejected our certificate, on purpose in tests); reap them here, quietly,
            # rather than at some random later garbage collection.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                gc.collect()

    def drop_connections(self) -> None:
        """Close every client connection from the server side, as a crashing server would."""
        if self._controller is None:
            return
        with self.log.lock:
            live = list(self.log.live)
        loop = self._controller.loop
        for session in live:
            if session.transport is not None:
                loop.call_soon_threadsafe(session.transport.close)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            with self.log.lock:
                if not self.log.live:
                    return
            time.sleep(0.01)

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self.log.lock:
            return list(self.log.messages)

    def _authenticate(
        self,
        server: RecordingSMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not server.encrypted:
            with self.log.lock:
                self.log.plaintext_auth_attempts += 1
            return AuthResult(success=False, handled=False)
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        if self.users.get(user) != password:
            return AuthResult(success=False, handled=False)
        server.user = user
        return AuthResult(success=True)


class _Controller(Controller):
    def __init__(self, handler: Any, owner: DevServer, **kwargs: Any) -> None:
        self._owner = owner
        self._triggered = False
        super().__init__(handler, **kwargs)

    def factory(self) -> RecordingSMTP:
        # The first session is the controller's own start-up probe: not a client, not counted.
        counted, self._triggered = self._triggered, True
        owner = self._owner
        with warnings.catch_warnings():
            # aiosmtpd cannot see implicit TLS and warns that AUTH does not require it;
            # _authenticate refuses AUTH on any unencrypted transport itself.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            session = RecordingSMTP(
                self.handler,
                log=owner.log,
                faults=lambda: owner.fault,
                counted=counted,
                connection_id=next(owner._ids) if counted else 0,
                pipelining=owner.pipelining,
                **self.SMTP_kwargs,
            )
        session.chunking = owner.chunking
        return session

    def _trigger_server(self) -> None:
        # A bare TCP connect is enough to make asyncio invoke the factory.
        with socket.create_connection((self.hostname, self.port), 1.0):
            pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _certificates(ca: Any, directory: Path | None, tls: TlsMode) -> tuple[Any, Path | None, Any]:
    if tls == "none":
        return None, None, None
    import ssl

    import trustme

    ca = ca or trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1", "::1").configure_cert(server_context)
    ca_file = None
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        ca_file = directory / "mailworker-dev-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
    return ca, ca_file, server_context
