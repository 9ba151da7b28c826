"""A Django email backend: ``send_mail()`` and ``EmailMessage.send()`` go through the queue.

    # settings.py
    EMAIL_BACKEND = "mailworker.django.EmailBackend"
    MAILWORKER_ACCOUNT = "default"  # optional: the SMTP account (SMTP_URL_<NAME>)

Each message becomes one ``send_email.delay()`` job: text body, an HTML alternative,
attachments, Cc, Bcc, Reply-To and extra headers included (a ``To``, ``Cc``, ``Reply-To``
or ``From`` header is what the message displays, as in Django; a ``Message-ID`` is kept;
a header mailworker cannot honour is refused, never dropped). Addresses Django accepts are
accepted, ``root@localhost`` included. Validation errors and an unreachable Redis raise at
``send()`` (unless ``fail_silently``), before anything is queued.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Sequence
from email.mime.base import MIMEBase
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.utils.functional import Promise

from mailworker.tasks.errors import InvalidAttachment, InvalidEmail, QueueUnavailable
from mailworker.tasks.send import send_email

EXPIRES_HEADER = "X-Mailworker-Expires-In"  # seconds; read and removed by the backend


class EmailBackend(BaseEmailBackend):
    def __init__(
        self,
        fail_silently: bool = False,
        account: str | None = None,
        expires_in: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(fail_silently=fail_silently, **kwargs)
        self.account = account or getattr(settings, "MAILWORKER_ACCOUNT", "default")
        self.expires_in = expires_in  # get_connection(expires_in=600): for every message

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Queue each message; return how many were queued."""
        queued = 0
        for message in email_messages:
            try:
                send_email.apply_async(kwargs=self.arguments(message), local_domains=True)
            except (InvalidEmail, QueueUnavailable):
                if not self.fail_silently:
                    raise
            else:
                queued += 1
        return queued

    def arguments(self, message: EmailMessage) -> dict[str, Any]:
        """The ``send_email`` keywords for one Django message."""
        text, html = message.body, None
        if message.content_subtype == "html":
            text, html = None, message.body
        for content, mimetype in getattr(message, "alternatives", ()):
            if mimetype == "text/html":
                html = content
        headers = {name: _header(value) for name, value in message.extra_headers.items()}
        expires_in: Any = self.expires_in
        for name in [n for n in headers if n.lower() == EXPIRES_HEADER.lower()]:
            expires_in = _seconds(name, headers.pop(name))
        return {
            "to": list(message.to),
            "cc": list(message.cc),
            "bcc": list(message.bcc),
            "reply_to": list(message.reply_to),
            "from_email": message.from_email,
            "subject": message.subject,
            "text": text or None,
            "html": html,
            "headers": headers,
            "attachments": [_attachment(i, a) for i, a in enumerate(message.attachments)],
            "account": self.account,
            **({"expires_in": expires_in} if expires_in is not None else {}),
        }


def _seconds(name: str, value: Any) -> float:
    try:
        return float(str(value))
    except ValueError:
        raise InvalidEmail(f"headers[{name!r}]", f"expected seconds, got {value!r}") from None


def _header(value: Any) -> Any:
    """A header value as Django would write it: text as it is (lazy strings too; the
    validation reads them), anything else through ``str``."""
    return value if isinstance(value, str | Promise | list | tuple) else str(value)


def _attachment(index: int, attachment: Any) -> dict[str, str]:
    if isinstance(attachment, MIMEBase):
        filename = attachment.get_filename() or "attachment"
        content = attachment.get_payload(decode=True) or b""
        mimetype = attachment.get_content_type()
    else:  # (filename, content, mimetype), a tuple or Django's EmailAttachment
        filename, content, mimetype = attachment
        mimetype = mimetype or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if not isinstance(content, bytes | str):  # a message/rfc822 part: not an attachment we send
        raise InvalidAttachment(f"attachments[{index}]", "only file content can be attached")
    if isinstance(content, str):
        try:
            content = content.encode()
        except UnicodeEncodeError:
            raise InvalidAttachment(
                f"attachments[{index}]", "text content with lone surrogates is not UTF-8"
            ) from None
    return {
        "filename": filename,
        "content_b64": base64.b64encode(content).decode(),
        "mimetype": mimetype,
    }
