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
from email.header import Header
from typing import Any

from mailworker.settings import Settings
from mailworker.store.job import Attachment, EmailJob, Mailbox
from mailworker.tasks.addresses import (
    FORBIDDEN,
    LINE_LIMIT,
    mailbox_list,
    plain_text,
    sender,
    shown_list,
)
from mailworker.tasks.errors import (
    HeaderInjection,
    HeaderTooLong,
    InvalidAddress,
    InvalidAttachment,
    InvalidEmail,
    MessageTooLarge,
    UnknownAccount,
)

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
        "priority",  # likewise: it picks the queue
        "expires_in",  # likewise: with expires_at, the job's expiry
        "expires_at",
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
# Of those, the displayed address headers a caller may set (the envelope stays to/cc/bcc).
SHOWN_HEADERS = {"from": "From", "to": "To", "cc": "Cc", "reply-to": "Reply-To"}
Headers = tuple[tuple[str, str], ...]
Shown = tuple[tuple[str, tuple[Mailbox, ...]], ...]
# RFC 5322 msg-id, printable ASCII without brackets or white space on either side.
_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,250}@[!-;=?-~]{1,250}>")
# Every pattern here is applied with ``fullmatch``: ``re.match`` with a pattern ending in
# ``$`` also matches before a final "\n", which let "X-Campaign\n" end the header block.
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ":"
_MAX_HEADER_NAME = 76  # "Name: " and a first word still fit in 78 columns
_FORBIDDEN = FORBIDDEN
# A file name also refuses TAB, the C1 controls and the bidirectional controls that make
# "invoice\u202efdp.exe" display as "invoiceexe.pdf".
_FORBIDDEN_IN_FILENAME = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]"
)
# RFC 6838 4.2 restricted-name, ASCII only, for both the type and the subtype.
_MIMETYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
# A multipart or message/* part cannot travel base64-encoded (RFC 2046 5.1, 5.2.1).
_COMPOSITE_TYPES = ("multipart/", "message/")
_LINE_LIMIT = LINE_LIMIT
_MAX_FILENAME = 255
_MAX_RECIPIENTS = 1000
_MAX_KEY = 200


def build_job(
    settings: Settings, arguments: Mapping[str, Any], *, local_domains: bool | None = None
) -> EmailJob:
    """Validate ``arguments`` (the keywords of ``send_email.delay``) into a job. Addresses
    at local domains pass if ``local_domains`` (default: ``ALLOW_LOCAL_DOMAINS``)."""
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
    local = settings.allow_local_domains if local_domains is None else local_domains
    headers, shown, message_id = _headers(arguments.get("headers") or {}, local)
    text = _optional_text("text", arguments.get("text"))
    html = _optional_text("html", arguments.get("html"))
    if text is None and html is None:
        raise InvalidEmail("text", "give text=, html= or both; the message has no body")

    job = EmailJob(
        id=str(uuid.uuid4()),
        account=account,
        from_email=sender(arguments.get("from_email"), settings.default_from_email, local),
        to=mailbox_list("to", arguments["to"], local),
        cc=mailbox_list("cc", arguments.get("cc", ()), local),
        bcc=mailbox_list("bcc", arguments.get("bcc", ()), local),
        reply_to=mailbox_list("reply_to", arguments.get("reply_to", ()), local),
        subject=_header_value("subject", arguments["subject"], header="Subject"),
        text=text,
        html=html,
        headers=headers,
        shown=shown,
        message_id=message_id,
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


def _optional_text(field: str, value: Any) -> str | None:
    if value is None:
        return None
    value = plain_text(value)
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


def _header_value(field: str, value: Any, *, header: str | None = None) -> str:
    """A value without line breaks or controls; as the value of ``header``, one that fits
    on one header line once encoded (so no fold or encoding is ever forced on it)."""
    value = plain_text(value)
    if not isinstance(value, str):
        raise InvalidEmail(field, f"expected a string, got {type(value).__name__}")
    if _FORBIDDEN.search(value):
        raise HeaderInjection(
            field, "header values must not contain CR, LF, NUL or other control characters"
        )
    _check_encodable(field, value)
    if header is not None and (size := len(header) + 2 + encoded_length(value)) > _LINE_LIMIT:
        raise HeaderTooLong(
            field,
            f"'{header}: ' and the value take {size} octets once encoded; at most {_LINE_LIMIT}",
        )
    return value


def encoded_length(value: str) -> int:
    """Octets of ``value`` as the worker writes it (worker.headers.unstructured): as is if
    ASCII, else RFC 2047 encoded words joined by spaces."""
    if value.isascii():
        return len(value)
    return len(" ".join(Header(value, "utf-8").encode(linesep="\n").split()))


def _headers(value: Any, local_domains: bool) -> tuple[Headers, Shown, str | None]:
    """The caller's headers; of those mailworker writes itself, a displayed From, To, Cc or
    Reply-To (Django's ``headers={"To": ...}``) and a Message-ID are taken (validated), the
    rest refused: none is ever dropped without a word."""
    if not isinstance(value, Mapping):
        raise InvalidEmail("headers", f"expected a dict, got {type(value).__name__}")
    headers: list[tuple[str, str]] = []
    shown: list[tuple[str, tuple[Mailbox, ...]]] = []
    message_id = None
    for name, header_value in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise HeaderInjection(
                "headers",
                f"{name!r} is not a valid header name (printable ASCII, no space, no colon)",
            )
        if len(name) > _MAX_HEADER_NAME:
            raise HeaderTooLong("headers", f"a header name is over {_MAX_HEADER_NAME} characters")
        field = f"headers[{name!r}]"
        if name.lower() in SHOWN_HEADERS:
            boxes = shown_list(field, header_value, local_domains)
            shown.append((SHOWN_HEADERS[name.lower()], boxes))
        elif name.lower() == "message-id":
            message_id = _message_id(field, header_value)
        elif name.lower() in RESERVED_HEADERS:
            raise InvalidEmail(
                "headers", f"{name} is set by mailworker; use the matching send_email argument"
            )
        else:
            headers.append((name, _header_value(field, header_value, header=name)))
    return tuple(headers), tuple(shown), message_id


def _message_id(field: str, value: Any) -> str:
    value = _header_value(field, value).strip()
    if not _MESSAGE_ID.fullmatch(value):
        raise InvalidEmail(field, f"{value!r} is not a Message-ID of the form <left@right>")
    return value


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
    filename = _filename(field, filename)
    if not isinstance(content, str):
        raise InvalidAttachment(field, "content_b64 must be a base64 string")
    try:
        base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidAttachment(field, "content_b64 is not valid base64") from None
    if not isinstance(mimetype, str) or not _MIMETYPE.fullmatch(mimetype):
        raise InvalidAttachment(
            field, f"mimetype {mimetype!r} is not of the form type/subtype (ASCII, RFC 6838)"
        )
    if mimetype.lower().startswith(_COMPOSITE_TYPES):
        raise InvalidAttachment(
            field, f"a {mimetype} part cannot be attached; send it as application/octet-stream"
        )
    return Attachment(filename=filename, content_b64=content, mimetype=mimetype)


def _filename(field: str, filename: Any) -> str:
    """A plain file name, without white space at its edges (readers drop it; Python's
    ``get_filename`` does). Text that looks like an RFC 2047 encoded word is kept as literal
    text: the worker writes every name it cannot quote as is RFC 2231-encoded."""
    if not isinstance(filename, str):
        raise InvalidAttachment(field, "filename is required")
    if _FORBIDDEN_IN_FILENAME.search(filename):
        raise HeaderInjection(
            f"{field}.filename",
            "a file name must not contain CR, LF, TAB, NUL, other controls or bidi controls",
        )
    _check_encodable(f"{field}.filename", filename)
    filename = filename.strip()
    if not filename:
        raise InvalidAttachment(field, "filename is required")
    if len(filename) > _MAX_FILENAME:
        raise InvalidAttachment(field, f"filename is over {_MAX_FILENAME} characters")
    if any(sep in filename for sep in "/\\") or filename in (".", ".."):
        raise InvalidAttachment(field, "filename must be a plain name, without a path")
    return filename


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
