"""CHUNKING (RFC 3030) for the development server: ``BDAT <size> [LAST]``.

aiosmtpd has DATA only. With CHUNKING the client sends the content right after the command,
exactly ``size`` bytes, no dot-stuffing and no terminating dot, so MAIL FROM, RCPT TO and
``BDAT <size> LAST`` with the content can all travel in one write (with PIPELINING): one
round trip per message. The chunk is always read whole, even when the transaction already
failed (RFC 3030 section 3: the server must consume it before answering), so the session
stays in step. Advertised only when the server's ``chunking`` is on (Postfix, Gmail and
Microsoft 365 offer it; aiosmtpd-based servers do not).
"""

from __future__ import annotations

from aiosmtpd.smtp import SMTP

_MAX_CHUNK = 64 * 1024 * 1024


class ChunkingSMTP(SMTP):
    """aiosmtpd's session plus ``BDAT``; ``chunking`` turns the extension on."""

    chunking = False
    _chunks: bytearray | None = None

    async def smtp_BDAT(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's dispatch naming
        size_text, _, last = (arg or "").strip().partition(" ")
        if not self.chunking:
            await self.push('500 Error: command "BDAT" not recognized')
            return
        if not size_text.isdigit() or last.strip().upper() not in ("", "LAST"):
            await self.push("501 5.5.4 Syntax: BDAT <size> [LAST]")
            return
        size = int(size_text)
        if size > _MAX_CHUNK:
            await self.push("552 5.3.4 Chunk too big")
            if self.transport is not None:
                self.transport.close()
            return
        chunk = await self._reader.readexactly(size)  # before any judgement: stay in step
        injected = await self._call_handler_hook("BDAT", arg)  # counted; a test's fault
        if isinstance(injected, str):
            self._chunks = None
            await self.push(injected)
            return
        if self.envelope is None or not self.envelope.rcpt_tos:
            self._chunks = None
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        self._chunks = (self._chunks or bytearray()) + chunk
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        content, self._chunks = bytes(self._chunks), None
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if not isinstance(status, str) else status)
