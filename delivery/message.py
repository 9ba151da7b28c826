"""Build the RFC 5322 message for a job: headers, bodies, attachments, and the envelope.

Bcc recipients are in the envelope only, never in a header. ``Message-ID`` derives from the
job id, so every attempt of one job carries the same id (receivers and our own tests can
de-duplicate on it); ``Date`` is the time the job was accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate

from mailworker.delivery import mime
from mailworker.delivery.dkim import dkim_sign
from mailworker.delivery.headers import address_list, header_block, unstructured
from mailworker.settings.dkim import DkimKey
from mailworker.store.job import EmailJob, Mailbox


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    smtputf8: bool


def message_id(job: EmailJob) -> str:
    if job.message_id is not None:
        return job.message_id
    domain = job.from_email[1].rpartition("@")[2]
    return f"<{job.id}@{domain}>"


def envelope_sender(job: EmailJob, return_path: str | None = None) -> str:
    """MAIL FROM: the From address, or with ``RETURN_PATH`` its VERP form
    ``local+<job id>@domain``, so a bounce names its job even when it quotes nothing of the
    original (RFC 5321 allows 64 octets of local part: a longer one stays plain)."""
    if return_path is None:
        return job.from_email[1]
    local, _, domain = return_path.rpartition("@")
    verp = f"{local}+{job.id}"
    return f"{verp}@{domain}" if len(verp) <= 64 else return_path


def build_envelope(
    job: EmailJob,
    recipients: tuple[str, ...] | None = None,
    *,
    dkim_keys: Mapping[str, DkimKey] | None = None,
    return_path: str | None = None,
) -> Envelope:
    """The bytes to send and to whom (by default every recipient not yet delivered),
    DKIM-signed if ``dkim_keys`` holds a key for the From domain."""
    if recipients is None:
        recipients = tuple(r for r in job.recipients if r not in job.done)
    smtputf8 = not all(a.isascii() for a in (job.from_email[1], *recipients)) or not all(
        _mailbox_is_ascii(m) for m in (*job.to, *job.cc, *job.reply_to)
    )
    data = build_message_bytes(job)
    if dkim_keys:
        data = dkim_sign(data, job.from_email[1], dkim_keys)
    sender = envelope_sender(job, return_path)
    return Envelope(sender=sender, recipients=recipients, data=data, smtputf8=smtputf8)


def build_message_bytes(job: EmailJob) -> bytes:
    """The whole message: one header block (ours, then the body entity's), then the body.

    Only an address may put raw UTF-8 in it (sent with SMTPUTF8); every part's header block
    is ASCII and every body 7bit-safe, so any server takes the rest.
    """
    body = _body(job)
    fields = _top_fields(job) + [("MIME-Version", "1.0")] + body.fields
    return header_block(fields) + b"\r\n" + body.content


def _body(job: EmailJob) -> mime.Entity:
    """One text part, or multipart/alternative of both; inside multipart/mixed with the
    attachments if there are any (the structure ``EmailMessage`` gives)."""
    texts = [mime.text(content, subtype) for content, subtype in _bodies(job)]
    body = texts[0] if len(texts) == 1 else mime.multipart("alternative", texts, job.id)
    if not job.attachments:
        return body
    attachments = [mime.attachment(item) for item in job.attachments]
    return mime.multipart("mixed", [body, *attachments], job.id)


def _top_fields(job: EmailJob) -> list[tuple[str, str]]:
    shown = dict(job.shown)  # what the caller wants displayed, where it differs
    fields = [("From", address_list(shown.get("From", (job.from_email,))))]
    for name, boxes in (("To", job.to), ("Cc", job.cc), ("Reply-To", job.reply_to)):
        if boxes := shown.get(name, boxes):
            fields.append((name, address_list(boxes)))
    fields += [
        ("Subject", unstructured(job.subject)),
        ("Date", _date(job.created_at)),
        ("Message-ID", message_id(job)),
    ]
    fields += [(name, unstructured(value)) for name, value in job.headers]
    return fields


def _bodies(job: EmailJob) -> list[tuple[str, str]]:
    """(content, subtype) of each alternative, preferred last: text, then HTML if both."""
    if job.text is None:
        return [(job.html or "", "html")]
    return [(job.text, "plain")] + ([(job.html, "html")] if job.html is not None else [])


def _mailbox_is_ascii(mailbox: Mailbox) -> bool:
    return mailbox[1].isascii()


def _date(created_at: float) -> str:
    if created_at <= 0:
        return formatdate(localtime=False)
    return format_datetime(datetime.fromtimestamp(created_at, UTC))
