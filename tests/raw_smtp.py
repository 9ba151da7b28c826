"""A raw SMTP server, byte by byte, for what aiosmtpd will not do: misbehave like Postfix.

aiosmtpd answers every command it has read before it closes, so a test server built on it
hides a client bug that Postfix shows: a 421 answered to a pipelined RCPT, then the
connection closed with the DATA still unanswered. This one speaks implicit TLS with a
certificate from the tests' CA, takes any AUTH PLAIN, advertises PIPELINING (and, with
``chunking``, CHUNKING: BDAT) and answers each RCPT with what ``rcpt_reply`` says; with
``split_replies`` every reply goes out in two pieces, a moment apart, so the client reads it
across separate reads.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trustme

# (connection number, recipient) -> a reply line ("421 4.7.0 ...") or None for 250.
# A reply starting with 421 closes the connection at once, as Postfix does.
RcptReply = Callable[[int, str], str | None]


@dataclass
class RawLog:
    connections: list[float] = field(default_factory=list)  # when each was accepted
    messages: list[tuple[float, int, bytes]] = field(default_factory=list)  # when, conn, data
    lock: threading.Lock = field(default_factory=threading.Lock)


class RawSmtpServer:
    def __init__(
        self,
        ca: trustme.CA,
        rcpt_reply: RcptReply,
        *,
        chunking: bool = False,
        split_replies: bool = False,
    ) -> None:
        self.rcpt_reply = rcpt_reply
        self.chunking, self.split_replies = chunking, split_replies
        self.log = RawLog()
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(self._context)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def url(self) -> str:
        return f"smtps://raw-user:raw-password@127.0.0.1:{self.port}"

    def __enter__(self) -> RawSmtpServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self.log.lock:
                self.log.connections.append(time.time())
                number = len(self.log.connections)
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, raw: socket.socket, number: int) -> None:
        try:
            with self._context.wrap_socket(raw, server_side=True) as sock:
                _Session(sock, number, self).run()
        except (OSError, ssl.SSLError):
            pass


class _Session:
    def __init__(self, sock: ssl.SSLSocket, number: int, server: RawSmtpServer) -> None:
        self.sock, self.number, self.server = sock, number, server
        self.reader = sock.makefile("rb")

    def send(self, *lines: str) -> None:
        data = "".join(line + "\r\n" for line in lines).encode()
        if not self.server.split_replies:
            self.sock.sendall(data)
            return
        for line in lines:  # each reply in two writes: the client must put it back together
            encoded = (line + "\r\n").encode()
            self.sock.sendall(encoded[:3])
            time.sleep(0.002)
            self.sock.sendall(encoded[3:])

    def run(self) -> None:
        self.send("220 raw.example.com ESMTP Postfix")
        while line := self.reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                chunking = ["250-CHUNKING"] if self.server.chunking else []
                self.send("250-raw.example.com", "250-PIPELINING", *chunking, "250-AUTH PLAIN",
                          "250 8BITMIME")  # fmt: skip
            elif verb == b"AUTH":
                self.send("235 2.7.0 Authentication successful")
            elif verb == b"RCPT":
                reply = self.server.rcpt_reply(self.number, line.decode().split(":", 1)[1].strip())
                if reply is not None and reply.startswith("421"):
                    self.send(reply)
                    return  # close at once: the pipelined DATA stays unanswered
                self.send(reply or "250 2.1.5 Ok")
            elif verb == b"BDAT" and self.server.chunking:
                size = int(line.split()[1])
                self._record(self.reader.read(size))
            elif verb == b"DATA":
                self.send("354 End data with <CR><LF>.<CR><LF>")
                self._message()
            elif verb == b"QUIT":
                self.send("221 2.0.0 Bye")
                return
            else:  # MAIL, RSET, NOOP
                self.send("250 2.0.0 Ok")

    def _message(self) -> None:
        data = bytearray()
        while (line := self.reader.readline()) not in (b".\r\n", b""):
            data += line
        self._record(bytes(data))

    def _record(self, data: bytes) -> None:
        log = self.server.log
        with log.lock:
            log.messages.append((time.time(), self.number, bytes(data)))
        self.send("250 2.0.0 Ok: queued")
