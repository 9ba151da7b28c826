"""Build the RFC 5322 message for a job: headers, bodies, attachments, and the envelope.

Bcc recipients are in the envelope only, never in a header. ``Message-ID`` derives from the
job id, so every attempt of one job carries the same id (receivers and our own tests can
de-duplicate on it); ``Date`` is the time the job was accepted.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formatdate

from tasks.job import EmailJob, Mailbox

# 7bit-safe bodies (quoted-printable/base64) work with any server; SMTPUTF8 is used only
# when an address needs it, and then headers may carry raw UTF-8.
_ASCII_POLICY = policy.SMTP.clone(cte_type="7bit")
_UTF8_POLICY = policy.SMTPUTF8.clone(cte_type="7bit")


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    smtputf8: bool


def message_id(job: EmailJob) -> str:
    domain = job.from_email[1].rpartition("@")[2]
    return f"<{job.id}@{domain}>"


def build_envelope(job: EmailJob, recipients: tuple[str, ...] | None = None) -> Envelope:
    """The bytes to send and to whom (by default every recipient not yet delivered)."""
    if recipients is None:
        recipients = tuple(r for r in job.recipients if r not in job.done)
    smtputf8 = not all(a.isascii() for a in (job.from_email[1], *recipients)) or not all(
        _mailbox_is_ascii(m) for m in (*job.to, *job.cc, *job.reply_to)
    )
    message = build_message(job)
    data = message.as_bytes(policy=_UTF8_POLICY if smtputf8 else _ASCII_POLICY)
    return Envelope(sender=job.from_email[1], recipients=recipients, data=data, smtputf8=smtputf8)


def build_message(job: EmailJob) -> EmailMessage:
    message = EmailMessage(policy=_ASCII_POLICY)
    message["From"] = _address(job.from_email)
    if job.to:
        message["To"] = [_address(m) for m in job.to]
    if job.cc:
        message["Cc"] = [_address(m) for m in job.cc]
    if job.reply_to:
        message["Reply-To"] = [_address(m) for m in job.reply_to]
    message["Subject"] = job.subject
    message["Date"] = _date(job.created_at)
    message["Message-ID"] = message_id(job)
    for name, value in job.headers:
        message[name] = value

    if job.text is not None:
        message.set_content(job.text)
        if job.html is not None:
            message.add_alternative(job.html, subtype="html")
    else:
        message.set_content(job.html or "", subtype="html")
    for attachment in job.attachments:
        maintype, _, subtype = attachment.mimetype.partition("/")
        message.add_attachment(
            base64.b64decode(attachment.content_b64),
            maintype=maintype,
            subtype=subtype,
            filename=attachment.filename,
        )
    return message


def _address(mailbox: Mailbox) -> Address:
    name, address = mailbox
    local, _, domain = address.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def _mailbox_is_ascii(mailbox: Mailbox) -> bool:
    return mailbox[1].isascii()


def _date(created_at: float) -> str:
    if created_at <= 0:
        return formatdate(localtime=False)
    return format_datetime(datetime.fromtimestamp(created_at, UTC))
