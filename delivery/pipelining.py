"""SMTP PIPELINING (RFC 2920): one mail transaction in two round trips instead of 3 + recipients,
and in one where the server also offers CHUNKING (RFC 3030).

Where the server advertises PIPELINING, MAIL FROM, every RCPT TO and DATA go out in one write
and their replies are read together; then the message, then its reply. With CHUNKING the
message itself follows ``BDAT <size> LAST`` in that same write (no dot-stuffing, no DATA
round trip), so the whole transaction is one round trip. Each RCPT reply is still judged on
its own, so one refused recipient never fails the others. A server that does not advertise
PIPELINING gets aiosmtplib's lock-step ``sendmail``.

aiosmtplib's protocol keeps one reply at a time: data that arrives while the previous reply
waits to be picked up is dropped, and a second reply already in the buffer is never parsed.
:class:`PipeliningProtocol` buffers every byte while replies are owed and parses from the
buffer first; :func:`enable_pipelining` switches a connected client's protocol to it (the
subclass adds behaviour only, no state). It relies on aiosmtplib's protocol internals, hence
the ``<6`` pin in pyproject.toml and the tests against real servers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import aiosmtplib
from aiosmtplib.email import parse_address, quote_address
from aiosmtplib.protocol import (
    COMMAND_INJECTION_REGEX,
    MAX_RESPONSE_LENGTH,
    PERIOD_REGEX,
    SMTPProtocol,
    normalize_message_line_endings,
)
from aiosmtplib.response import SMTPResponse

from mailworker.delivery.crashpoint import crash_point

_START_INPUT = 354
_COMPLETED = 250
_WILL_FORWARD = 251
_CLOSING = 421  # service not available, closing the channel
# A transaction's protocol, its MAIL FROM and RCPT TO commands, and its message bytes.
_Envelope = tuple["PipeliningProtocol", list[bytes], bytes]
# Replies a pipelined batch may hold: MAIL + recipients + DATA, each up to one long reply.
_MAX_BUFFER = 64 * MAX_RESPONSE_LENGTH


class PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol, able to hold several replies that arrive together."""

    _owed = 0  # replies still due to a pipelined batch (class default: no new instance state)

    def data_received(self, data: bytes) -> None:
        if self._response_waiter is None:
            return
        if not (self._response_pending or self._owed):
            return  # unsolicited: dropped, as aiosmtplib does
        self._buffer.extend(data)
        if len(self._buffer) > _MAX_BUFFER:
            del self._buffer[:]
            self._set_response_exception(
                self._response_waiter,
                aiosmtplib.SMTPResponseException(-1, "Response too long"),
            )
            return
        self._hand_over()

    async def read_response(self, timeout: float | None = None) -> SMTPResponse:
        self._response_pending = True
        self._hand_over()  # a reply may already sit in the buffer
        return await super().read_response(timeout)

    async def pipeline(
        self, commands: Sequence[bytes], timeout: float | None, trailer: bytes = b""
    ) -> list[SMTPResponse]:
        """Write ``commands`` (and ``trailer``, a BDAT chunk) in one go and return their
        replies, in order.

        Stops early (returning fewer replies) only when the connection drops after at least
        one reply arrived, so the caller can judge the replies it has.
        """
        for command in commands:
            if COMMAND_INJECTION_REGEX.search(command):
                raise ValueError("Command contains a prohibited control character")
        if self._command_lock is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        replies: list[SMTPResponse] = []
        async with self._command_lock:
            self._owed = len(commands)
            try:
                self.write(b"".join(command + b"\r\n" for command in commands) + trailer)
                while self._owed:
                    try:
                        replies.append(await self.read_response(timeout))
                    except aiosmtplib.SMTPServerDisconnected:
                        if not replies:
                            raise
                        break
                    self._owed -= 1
            finally:
                self._owed = 0
        return replies

    def _hand_over(self) -> None:
        waiter = self._response_waiter
        if waiter is None or waiter.done() or not self._buffer:
            return
        try:
            response = self._read_response_from_buffer()
        except Exception as exc:  # noqa: BLE001 - a malformed reply fails the waiting read
            self._set_response_exception(waiter, exc)
        else:
            if response is not None:
                waiter.set_result(response)


def enable_pipelining(smtp: aiosmtplib.SMTP) -> None:
    """Let a connected client hold pipelined replies (harmless if the server never pipelines)."""
    if smtp.protocol is not None and type(smtp.protocol) is SMTPProtocol:
        smtp.protocol.__class__ = PipeliningProtocol


def can_pipeline(smtp: aiosmtplib.SMTP) -> bool:
    return isinstance(smtp.protocol, PipeliningProtocol) and smtp.supports_extension("pipelining")


async def send_transaction(
    smtp: aiosmtplib.SMTP,
    sender: str,
    recipients: Sequence[str],
    data: bytes,
    *,
    mail_options: Sequence[str] = (),
    timeout: float | None = None,
    chunking: bool = True,
) -> tuple[dict[str, SMTPResponse], str]:
    """Send one message; same result and exceptions as ``aiosmtplib.SMTP.sendmail``;
    ``chunking``: use BDAT where the server offers it.

    Returns the refused recipients (with their replies) and the final reply's text; when
    every recipient is refused, all of them and an empty text (nothing was sent). Raises
    ``SMTPSenderRefused`` or ``SMTPDataError``; after a refusal the session is reset (RSET),
    as aiosmtplib does.
    """
    try:
        if not can_pipeline(smtp):
            return await smtp.sendmail(
                sender, list(recipients), data, mail_options=list(mail_options), timeout=timeout
            )
        try:
            envelope = _envelope_commands(smtp, sender, recipients, data, mail_options)
            send = _chunked if chunking and smtp.supports_extension("chunking") else _pipelined
            return await send(envelope, sender, recipients, timeout)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
                await smtp.rset(timeout=timeout)
            raise
    except aiosmtplib.SMTPRecipientsRefused as exc:  # a result, not an error
        return {e.recipient: SMTPResponse(e.code, e.message) for e in exc.recipients}, ""


async def _pipelined(
    envelope: _Envelope, sender: str, recipients: Sequence[str], timeout: float | None
) -> tuple[dict[str, SMTPResponse], str]:
    """MAIL, RCPTs and DATA in one write; the content after the 354: two round trips."""
    protocol, commands, message = envelope
    commands.append(b"DATA")
    replies = await protocol.pipeline(commands, timeout)
    refused = _judge(replies, sender, recipients, len(commands))
    crash_point("mail-from")
    data_reply = replies[-1]
    if len(refused) == len(recipients):
        if data_reply.code == _START_INPUT:
            # A server that took DATA with no recipient: end the empty message (RFC 2920 3.1).
            await _send_content(protocol, b"", timeout)
        raise _all_refused(refused)
    if data_reply.code != _START_INPUT:
        raise aiosmtplib.SMTPDataError(data_reply.code, data_reply.message)
    final = await _send_content(protocol, message, timeout)
    if final.code != _COMPLETED:
        raise aiosmtplib.SMTPDataError(final.code, final.message)
    return refused, final.message


async def _chunked(
    envelope: _Envelope, sender: str, recipients: Sequence[str], timeout: float | None
) -> tuple[dict[str, SMTPResponse], str]:
    """MAIL, RCPTs, ``BDAT <size> LAST`` and the content in one write: one round trip. The
    server reads the chunk whatever the RCPTs got (RFC 3030 3), so a transaction every
    recipient refused ends with its BDAT refused, nothing delivered."""
    protocol, commands, message = envelope
    commands.append(f"BDAT {len(message)} LAST".encode("ascii"))
    replies = await protocol.pipeline(commands, timeout, trailer=message)
    refused = _judge(replies, sender, recipients, len(commands))
    if len(refused) == len(recipients):
        raise _all_refused(refused)
    final = replies[-1]
    if final.code != _COMPLETED:
        raise aiosmtplib.SMTPDataError(final.code, final.message)
    return refused, final.message


def _envelope_commands(
    smtp: aiosmtplib.SMTP,
    sender: str,
    recipients: Sequence[str],
    data: bytes,
    mail_options: Sequence[str],
) -> _Envelope:
    """The protocol, MAIL FROM and RCPT TO commands, and the message with CRLF endings."""
    protocol = smtp.protocol
    assert isinstance(protocol, PipeliningProtocol)
    encoding = "utf-8" if any(o.lower() == "smtputf8" for o in mail_options) else "ascii"
    parse_address(sender)
    for recipient in recipients:
        parse_address(recipient)
    message = normalize_message_line_endings(data)
    options = list(mail_options)
    if smtp.supports_extension("size"):
        options.insert(0, f"SIZE={len(message)}")
    commands = [
        b" ".join(
            [b"MAIL FROM:" + quote_address(sender).encode(encoding)]
            + [option.encode("ascii") for option in options]
        )
    ]
    commands += [b"RCPT TO:" + quote_address(r).encode(encoding) for r in recipients]
    return protocol, commands, message


def _judge(
    replies: Sequence[SMTPResponse], sender: str, recipients: Sequence[str], expected: int
) -> dict[str, SMTPResponse]:
    """The MAIL reply (a refusal raises) and the refused recipients, each on its own reply."""
    mail_reply, rcpt_replies = replies[0], replies[1 : 1 + len(recipients)]
    if mail_reply.code != _COMPLETED:
        raise aiosmtplib.SMTPSenderRefused(mail_reply.code, mail_reply.message, sender)
    if len(replies) < expected:
        raise _cut_short(recipients, rcpt_replies)
    return {
        recipient: reply
        for recipient, reply in zip(recipients, rcpt_replies, strict=True)
        if reply.code not in (_COMPLETED, _WILL_FORWARD)
    }


def _all_refused(refused: dict[str, SMTPResponse]) -> aiosmtplib.SMTPRecipientsRefused:
    return aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(r.code, r.message, rcpt) for rcpt, r in refused.items()]
    )


def _cut_short(
    recipients: Sequence[str], rcpt_replies: Sequence[SMTPResponse]
) -> aiosmtplib.SMTPException:
    """The server closed after answering part of the group (Postfix answers 421 to a RCPT and
    closes): the replies that did arrive are judged as lock-step would judge them."""
    for recipient, reply in zip(recipients, rcpt_replies, strict=False):
        if reply.code == _CLOSING:
            return aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
    return aiosmtplib.SMTPServerDisconnected("Connection lost in a pipelined transaction")


async def _send_content(
    protocol: PipeliningProtocol, message: bytes, timeout: float | None
) -> SMTPResponse:
    """The message after a 354: dot-stuffed, ended with CRLF.CRLF; the final reply."""
    if protocol._command_lock is None:
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    body = PERIOD_REGEX.sub(b"..", message)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    async with protocol._command_lock:
        protocol._response_pending = True
        protocol.write(body + b".\r\n")
        return await protocol.read_response(timeout)
