"""Turn the keyword arguments of ``send_email.delay()`` into a valid :class:`EmailJob`.

Everything that could fail at send time because of the *input* fails here instead, in the
producer, with an :class:`InvalidEmail` naming the argument: a bad job never reaches Redis
and never reaches a worker.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from email_validator import EmailNotValidError, validate_email

from settings import Settings
from tasks.errors import (
    HeaderInjection,
    InvalidAddress,
    InvalidAttachment,
    InvalidEmail,
    MessageTooLarge,
    UnknownAccount,
)
from tasks.job import Attachment, EmailJob, Mailbox

ARGUMENTS = frozenset(
    {
        "to",
        "subject",
        "text",
        "html",
        "from_email",
        "cc",
        "bcc",
        "reply_to",
        "headers",
        "attachments",
        "account",
        "idempotency_key",
        "tags",
        "ignore_suppression",
        "send_at",  # taken by send_email.apply_async before build_job
    }
)
# Headers mailworker writes itself; letting callers set them would allow spoofed envelopes,
# duplicated structure or a second Message-ID.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "message-id",
        "date",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "sender",
    }
)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ":"
# CR, LF, NUL and every other character Python's email package treats as a line break or
# that has no business in a header (C0 controls but TAB, DEL, NEL, LS, PS).
_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_MIMETYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*$")
_MAX_RECIPIENTS = 1000
_MAX_KEY = 200


def build_job(settings: Settings, arguments: Mapping[str, Any]) -> EmailJob:
    """Validate ``arguments`` (the keywords of ``send_email.delay``) into a job."""
    unknown = sorted(set(arguments) - ARGUMENTS)
    if unknown:
        raise InvalidEmail(
            unknown[0], f"unknown argument; send_email accepts {', '.join(sorted(ARGUMENTS))}"
        )
    if "to" not in arguments or "subject" not in arguments:
        raise InvalidEmail("to" if "to" not in arguments else "subject", "is required")

    account = arguments.get("account", "default")
    if not isinstance(account, str) or account not in settings.accounts:
        raise UnknownAccount(
            "account",
            f"{account!r} is not configured (configured: {sorted(settings.accounts) or 'none'});"
            f" set SMTP_URL or SMTP_URL_<NAME> in the environment",
        )
    text = _optional_text("text", arguments.get("text"))
    html = _optional_text("html", arguments.get("html"))
    if text is None and html is None:
        raise InvalidEmail("text", "give text=, html= or both; the message has no body")

    job = EmailJob(
        id=str(uuid.uuid4()),
        account=account,
        from_email=_sender(arguments.get("from_email"), settings.default_from_email),
        to=_mailboxes("to", arguments["to"]),
        cc=_mailboxes("cc", arguments.get("cc", ())),
        bcc=_mailboxes("bcc", arguments.get("bcc", ())),
        reply_to=_mailboxes("reply_to", arguments.get("reply_to", ())),
        subject=_header_value("subject", arguments["subject"]),
        text=text,
        html=html,
        headers=_headers(arguments.get("headers") or {}),
        attachments=_attachments(arguments.get("attachments") or ()),
        idempotency_key=_optional_key("idempotency_key", arguments.get("idempotency_key")),
        tags=_tags(arguments.get("tags") or {}),
        created_at=time.time(),
        ignore_suppression=_flag("ignore_suppression", arguments.get("ignore_suppression", False)),
    )
    if not job.recipients:
        raise InvalidAddress("to", "no recipient: give at least one address in to, cc or bcc")
    if len(job.recipients) > _MAX_RECIPIENTS:
        raise InvalidAddress("to", f"{len(job.recipients)} recipients; at most {_MAX_RECIPIENTS}")
    _check_size(job, settings.max_message_bytes)
    return job


def _flag(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidEmail(field, f"expected True or False, got {value!r}")
    return value


def parse_mailbox(field: str, value: Any) -> Mailbox:
    """One address, optionally with a display name (``"Ann <ann@example.com>"``)."""
    if not isinstance(value, str):
        raise InvalidAddress(field, f"expected an address string, got {type(value).__name__}")
    if _FORBIDDEN.search(value):
        raise HeaderInjection(
            field, "an address must not contain CR, LF, NUL or control characters"
        )
    try:
        result = validate_email(
            value, check_deliverability=False, allow_smtputf8=True, allow_display_name=True
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(field, f"{value!r} is not a valid address: {exc}") from None
    # The domain always travels as punycode, so SMTPUTF8 is needed only when the local part
    # itself is non-ASCII.
    return (result.display_name or "", f"{result.local_part}@{result.ascii_domain}")


def _mailboxes(field: str, value: Any) -> tuple[Mailbox, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise InvalidAddress(field, f"expected a string or a list, got {type(value).__name__}")
    return tuple(parse_mailbox(field, item) for item in value)


def _sender(value: Any, default: str | None) -> Mailbox:
    if value is None:
        if default is None:
            raise InvalidAddress(
                "from_email", "no sender: pass from_email= or set DEFAULT_FROM_EMAIL"
            )
        value = default
    return parse_mailbox("from_email", value)


def _optional_text(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEmail(field, f"expected a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidEmail(field, "contains a NUL character")
    _check_encodable(field, value)
    return value


def _check_encodable(field: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEmail(field, "contains lone surrogates; not encodable as UTF-8") from None


def _header_value(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidEmail(field, f"expected a string, got {type(value).__name__}")
    if _FORBIDDEN.search(value):
        raise HeaderInjection(
            field, "header values must not contain CR, LF, NUL or other control characters"
        )
    _check_encodable(field, value)
    return value


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise InvalidEmail("headers", f"expected a dict, got {type(value).__name__}")
    headers = []
    for name, header_value in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise HeaderInjection(
                "headers", f"{name!r} is not a valid header name (printable ASCII, no colon)"
            )
        if name.lower() in RESERVED_HEADERS:
            raise InvalidEmail(
                "headers", f"{name} is set by mailworker; use the matching send_email argument"
            )
        headers.append((name, _header_value(f"headers[{name!r}]", header_value)))
    return tuple(headers)


def _attachments(value: Any) -> tuple[Attachment, ...]:
    if not isinstance(value, list | tuple):
        raise InvalidAttachment("attachments", f"expected a list, got {type(value).__name__}")
    return tuple(_attachment(i, item) for i, item in enumerate(value))


def _attachment(index: int, item: Any) -> Attachment:
    field = f"attachments[{index}]"
    if not isinstance(item, Mapping) or set(item) - {"filename", "content_b64", "mimetype"}:
        raise InvalidAttachment(field, 'expected {"filename", "content_b64", "mimetype"}')
    filename = item.get("filename")
    content = item.get("content_b64")
    mimetype = item.get("mimetype", "application/octet-stream")
    if not isinstance(filename, str) or not filename.strip():
        raise InvalidAttachment(field, "filename is required")
    filename = _header_value(f"{field}.filename", filename)
    if any(sep in filename for sep in "/\\") or filename.strip() in (".", ".."):
        raise InvalidAttachment(field, "filename must be a plain name, without a path")
    if not isinstance(content, str):
        raise InvalidAttachment(field, "content_b64 must be a base64 string")
    try:
        base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidAttachment(field, "content_b64 is not valid base64") from None
    if not isinstance(mimetype, str) or not _MIMETYPE.match(mimetype):
        raise InvalidAttachment(field, f"mimetype {mimetype!r} is not of the form type/subtype")
    return Attachment(filename=filename, content_b64=content, mimetype=mimetype)


def _optional_key(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_KEY:
        raise InvalidEmail(field, f"expected a non-empty string of at most {_MAX_KEY} characters")
    return _header_value(field, value)


def _tags(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise InvalidEmail("tags", f"expected a dict of strings, got {type(value).__name__}")
    tags = []
    for key, tag in value.items():
        if not isinstance(key, str) or not isinstance(tag, str):
            raise InvalidEmail("tags", "keys and values must be strings")
        tags.append((_header_value("tags", key), _header_value("tags", tag)))
    return tuple(tags)


def _check_size(job: EmailJob, limit: int) -> None:
    # Base64 grows attachments by a third again on the wire; bodies may grow by QP encoding.
    size = sum(len(a.content_b64) for a in job.attachments)
    size += sum(len((part or "").encode("utf-8")) for part in (job.text, job.html, job.subject))
    size += sum(len(n) + len(v) for n, v in job.headers)
    if size > limit:
        raise MessageTooLarge(
            "attachments" if job.attachments else "text",
            f"message is about {size:,} bytes, over the {limit:,}-byte cap (MAX_MESSAGE_BYTES)",
        )
