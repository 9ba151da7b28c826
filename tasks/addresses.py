"""Mailboxes in a job: From, To, Cc, Bcc, Reply-To and a displayed address header, as apps
write them (``Zoë <zoe@example.com>``, a Django lazy string, ``root@localhost`` where local
domains are allowed). The reading itself is :mod:`mailworker.settings.mailboxes`."""

from __future__ import annotations

import re
import sys
from email.utils import getaddresses
from typing import Any

from mailworker.settings import mailboxes
from mailworker.store.job import Mailbox
from mailworker.tasks.errors import HeaderInjection, InvalidAddress

# CR, LF, NUL and every other character Python's email package treats as a line break or
# that has no business in a header (C0 controls but TAB, DEL, NEL, LS, PS).
FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
LINE_LIMIT = 998  # RFC 5322 2.1.1: octets in a header line, CRLF excluded


def parse_mailbox(field: str, value: Any, *, local_domains: bool = False) -> Mailbox:
    """One address, optionally with a display name (``"Ann <ann@example.com>"``,
    ``Zoë <zoe@example.com>``); a local domain (``root@localhost``) if ``local_domains``."""
    value = plain_text(value)
    if not isinstance(value, str):
        raise InvalidAddress(field, f"expected an address string, got {type(value).__name__}")
    if FORBIDDEN.search(value):
        raise HeaderInjection(
            field, "an address must not contain CR, LF, NUL or control characters"
        )
    try:
        name, address = mailboxes.parse_mailbox(value, local_domains=local_domains)
    except mailboxes.AddressError as exc:
        raise InvalidAddress(field, str(exc)) from None
    # An ASCII name is written quoted and cannot be folded inside a word; a non-ASCII one
    # becomes encoded words, which fold. "Reply-To: " is the longest header it may go in.
    # (formataddr refuses a non-ASCII local part, which SMTPUTF8 allows: quote by hand.)
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    written = f'"{quoted}" <{address}>' if name.isascii() else address
    if len("Reply-To: ") + len(written.encode("utf-8")) > LINE_LIMIT:
        raise InvalidAddress(field, f"the display name does not fit in a {LINE_LIMIT}-octet line")
    return (name, address)


def plain_text(value: Any) -> Any:
    """A Django lazy string (``gettext_lazy``) as the text it stands for; anything else as
    it is. Django is not imported for this: a lazy string exists only if Django is loaded."""
    django_functional = sys.modules.get("django.utils.functional")
    if django_functional is not None and isinstance(value, django_functional.Promise):
        return str(value)
    return value


def mailbox_list(field: str, value: Any, local_domains: bool) -> tuple[Mailbox, ...]:
    if value is None:
        return ()
    value = plain_text(value)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise InvalidAddress(field, f"expected a string or a list, got {type(value).__name__}")
    return tuple(parse_mailbox(field, item, local_domains=local_domains) for item in value)


def sender(value: Any, default: str | None, local_domains: bool) -> Mailbox:
    if value is None:
        if default is None:
            raise InvalidAddress(
                "from_email", "no sender: pass from_email= or set DEFAULT_FROM_EMAIL"
            )
        value = default
    return parse_mailbox("from_email", value, local_domains=local_domains)


def shown_list(field: str, value: Any, local_domains: bool) -> tuple[Mailbox, ...]:
    """A displayed address list: a list, or one string of comma-separated mailboxes."""
    value = plain_text(value)
    if isinstance(value, str):
        if FORBIDDEN.search(value):
            raise HeaderInjection(field, "must not contain CR, LF, NUL or control characters")
        value = [_quoted(*pair) for pair in getaddresses([value])]
    boxes = mailbox_list(field, value, local_domains)
    if not boxes:
        raise InvalidAddress(field, "no address")
    return boxes


def _quoted(name: str, address: str) -> str:
    if not name:
        return address
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{address}>'
