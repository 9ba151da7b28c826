"""Build the RFC 5322 message for a job: headers, bodies, attachments, and the envelope.

Bcc recipients are in the envelope only, never in a header. ``Message-ID`` derives from the
job id, so every attempt of one job carries the same id (receivers and our own tests can
de-duplicate on it); ``Date`` is the time the job was accepted.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy, quoprimime
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime, formatdate

from settings.dkim import DkimKey
from tasks.job import EmailJob, Mailbox
from worker.dkim import dkim_sign
from worker.headers import address_list, header_block, mailbox, unstructured

# 7bit-safe bodies (quoted-printable/base64) work with any server; SMTPUTF8 is used only
# when an address needs it, and then headers may carry raw UTF-8.
_ASCII_POLICY = policy.SMTP.clone(cte_type="7bit")
_UTF8_POLICY = policy.SMTPUTF8.clone(cte_type="7bit")
# The stdlib sends a text body as 7bit only if no line is longer than this (78).
_LINE_LENGTH = _ASCII_POLICY.max_line_length


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    smtputf8: bool


def message_id(job: EmailJob) -> str:
    domain = job.from_email[1].rpartition("@")[2]
    return f"<{job.id}@{domain}>"


def build_envelope(
    job: EmailJob,
    recipients: tuple[str, ...] | None = None,
    *,
    dkim_keys: Mapping[str, DkimKey] | None = None,
) -> Envelope:
    """The bytes to send and to whom (by default every recipient not yet delivered),
    DKIM-signed if ``dkim_keys`` holds a key for the From domain."""
    if recipients is None:
        recipients = tuple(r for r in job.recipients if r not in job.done)
    smtputf8 = not all(a.isascii() for a in (job.from_email[1], *recipients)) or not all(
        _mailbox_is_ascii(m) for m in (*job.to, *job.cc, *job.reply_to)
    )
    data = build_message_bytes(job, smtputf8=smtputf8)
    if dkim_keys:
        data = dkim_sign(data, job.from_email[1], dkim_keys)
    return Envelope(sender=job.from_email[1], recipients=recipients, data=data, smtputf8=smtputf8)


def build_message_bytes(job: EmailJob, *, smtputf8: bool = False) -> bytes:
    """The whole message: our header block, then the MIME body (headers and parts)."""
    body = _simple_body(job)
    if body is None:
        body = _mime_body(job, _UTF8_POLICY if smtputf8 else _ASCII_POLICY)
    return header_block(_top_fields(job)) + body


def _top_fields(job: EmailJob) -> list[tuple[str, str]]:
    fields = [("From", mailbox(job.from_email))]
    if job.to:
        fields.append(("To", address_list(job.to)))
    if job.cc:
        fields.append(("Cc", address_list(job.cc)))
    if job.reply_to:
        fields.append(("Reply-To", address_list(job.reply_to)))
    fields += [
        ("Subject", unstructured(job.subject)),
        ("Date", _date(job.created_at)),
        ("Message-ID", message_id(job)),
    ]
    fields += [(name, unstructured(value)) for name, value in job.headers]
    return fields


def _simple_body(job: EmailJob) -> bytes | None:
    """Text and/or HTML without attachments, written directly; None for anything else.

    The same shape ``EmailMessage.set_content`` produces (7bit when every line is ASCII and
    fits in 78 columns, else quoted-printable), at a fraction of its cost.
    """
    if job.attachments:
        return None
    encoded = [_text_part(content, subtype) for content, subtype in _bodies(job)]
    if len(encoded) == 1:
        return b"MIME-Version: 1.0\r\n" + encoded[0]
    boundary = f"=_mailworker_{job.id.replace('-', '')}"
    if any(boundary.encode() in part for part in encoded):
        return None  # a 7bit body that quotes our boundary: let the stdlib pick another
    # The CRLF before each delimiter belongs to the delimiter (RFC 2046 5.1.1), not the part.
    delimiter = f"\r\n--{boundary}\r\n".encode()
    return (
        f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="{boundary}"'
        "\r\n".encode()
        + b"".join(delimiter + part for part in encoded)
        + f"\r\n--{boundary}--\r\n".encode()
    )


def _bodies(job: EmailJob) -> list[tuple[str, str]]:
    """(content, subtype) of each alternative, preferred last: text, then HTML if both."""
    if job.text is None:
        return [(job.html or "", "html")]
    return [(job.text, "plain")] + ([(job.html, "html")] if job.html is not None else [])


def _text_part(content: str, subtype: str) -> bytes:
    lines = content.encode("utf-8").splitlines()
    if all(len(line) <= _LINE_LENGTH for line in lines) and content.isascii():
        cte, payload = "7bit", b"\r\n".join(lines) + b"\r\n"
    else:
        normal = (b"\n".join(lines) + b"\n").decode("latin-1")
        encoded = quoprimime.body_encode(normal, _LINE_LENGTH - 2)  # RFC 2045: lines <= 76
        cte, payload = "quoted-printable", encoded.encode("ascii").replace(b"\n", b"\r\n")
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {cte}\r\n\r\n".encode()
        + payload
    )


def _mime_body(job: EmailJob, policy_: Policy) -> bytes:
    """Bodies with attachments: the stdlib's MIME machinery, our header block on top."""
    message = EmailMessage(policy=_ASCII_POLICY)
    (content, subtype), *alternatives = _bodies(job)
    message.set_content(content, subtype=subtype)
    for content, subtype in alternatives:
        message.add_alternative(content, subtype=subtype)
    for attachment in job.attachments:
        maintype, _, subtype = attachment.mimetype.partition("/")
        message.add_attachment(
            base64.b64decode(attachment.content_b64),
            maintype=maintype,
            subtype=subtype,
            filename=attachment.filename,
        )
    return message.as_bytes(policy=policy_)


def _mailbox_is_ascii(mailbox: Mailbox) -> bool:
    return mailbox[1].isascii()


def _date(created_at: float) -> str:
    if created_at <= 0:
        return formatdate(localtime=False)
    return format_datetime(datetime.fromtimestamp(created_at, UTC))
