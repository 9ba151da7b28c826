"""Bounces that are not DSNs: Exim's and qmail's defaults, Yahoo's "Failure Notice", and
Microsoft's JMRP complaints, read from their text the way a person would.

A bounce is recognised by its sender (``MAILER-DAEMON``, ``postmaster``), an
``X-Failed-Recipients`` header or a bounce subject, before any auto-reply check (Exim and
Gmail mark their bounces ``Auto-Submitted: auto-replied`` too). Each failed recipient comes
from ``X-Failed-Recipients`` or a ``<address>:`` line; its diagnostic is the paragraph that
names it, judged like a RCPT reply (feedback.reports.judge_failure): a paragraph that says
nothing clear ("<ann@example.com>:" alone) is soft. The original's Message-ID comes from an
attached copy, or from the copy pasted below the "copy of the message" line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import Message
from email.utils import getaddresses, parseaddr

_DAEMON = re.compile(r"^(mailer[-_]?daemon|postmaster|mail-delivery-subsystem)@", re.IGNORECASE)
_SUBJECT = re.compile(
    r"undeliver|delivery (status notification|failure|failed|has failed)|failure notice|"
    r"mail delivery failed|returned mail|could not be delivered|non-?delivery",
    re.IGNORECASE,
)
_DELAYED = re.compile(r"\b(delayed|warning|still being retried|will (be )?retr)", re.IGNORECASE)
_COPY = re.compile(
    r"^\W*(below this line is a copy|this is a copy of the message|original message follows|"
    r"the original message|undelivered message follows|returned message follows)",
    re.IGNORECASE | re.MULTILINE,
)
_ANGLED = re.compile(r"^\s*<([^<>\s@]+@[^<>\s]+)>:?\s*$", re.MULTILINE)
_HEADER_ID = re.compile(r"^Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_STATUS = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")

Judge = Callable[[str, str], str]


def is_bounce(message: Message) -> bool:
    sender = parseaddr(message.get("From") or "")[1]
    subject = " ".join(str(message.get("Subject") or "").split())
    return bool(message.get("X-Failed-Recipients") or _DAEMON.match(sender)
                or _SUBJECT.search(subject))  # fmt: skip


def failed_recipients(message: Message, judge: Judge) -> list[tuple[str, str, str, str]]:
    """``(address, severity, status, diagnostic)`` for each recipient the text names."""
    notice = _COPY.split(_text(message), maxsplit=1)[0]
    named = [a for _, a in getaddresses(message.get_all("X-Failed-Recipients") or []) if "@" in a]
    named = named or _ANGLED.findall(notice)
    delayed = bool(_DELAYED.search(str(message.get("Subject") or "")))
    found = []
    for address in dict.fromkeys(named):
        diagnostic = _paragraph(notice, address)
        status = _STATUS.search(diagnostic)
        code = status.group(0) if status else ""
        severity = "delayed" if delayed else judge(code, diagnostic)
        found.append((address, severity, code, diagnostic[:500]))
    return found


def pasted_message_id(message: Message) -> str | None:
    """The Message-ID of the original pasted below the "copy of the message" line."""
    parts = _COPY.split(_text(message), maxsplit=1)
    found = _HEADER_ID.search(parts[-1]) if len(parts) > 1 else None
    return found.group(1) if found else None


def jmrp_recipient(original: Message | None) -> str:
    """Microsoft's JMRP complaint: the complaining address, kept in the attached original."""
    if original is None:
        return ""
    return parseaddr(original.get("X-HmXmrOriginalRecipient") or "")[1]


def _paragraph(notice: str, address: str) -> str:
    """The lines from the first that names ``address`` to the next blank line."""
    lines = notice.splitlines()
    folded = address.casefold()
    for i, line in enumerate(lines):
        if folded in line.casefold():
            block = [line]
            for following in lines[i + 1 :]:
                if not following.strip():
                    break
                block.append(following)
            return " ".join(" ".join(block).split())
    return ""


def _text(message: Message) -> str:
    """The message's own text/plain parts (not an attached original's), decoded."""
    texts = []
    for part in message.walk():
        if part.get_content_type() == "message/rfc822":
            break
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                texts.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return "\n".join(texts)
