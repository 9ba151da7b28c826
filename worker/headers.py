"""Write a message's top-level header block: folded at whitespace, encoded only when needed.

The stdlib's ``email.policy`` headers are parsed into objects and folded by a general
folder. That costs about half of building a message, and its folder RFC 2047-encodes an
ASCII token that does not fit in 78 columns: a signed ``List-Unsubscribe`` URL came out as
``=?utf-8?q?=3Chttps=3A//...?=``, which mailbox providers do not read as a link. Here an
ASCII value is only folded (at spaces; a longer token keeps a line to itself, within the
998-octet limit of RFC 5322), and only non-ASCII text is encoded (RFC 2047, by the stdlib's
``email.header``). Values were validated at enqueue time: no CR, LF or other controls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from email.header import Header
from email.utils import formataddr

from tasks.job import Mailbox

_FOLD_AT = 78  # RFC 5322 2.1.1: SHOULD
_LINE_LIMIT = 998  # RFC 5322 2.1.1: MUST


class HeaderTooLong(ValueError):
    """An ASCII token longer than a header line may be (the caller encodes it instead)."""


def mailbox(box: Mailbox) -> str:
    """``Name <address>``, the name quoted or RFC 2047-encoded as it needs."""
    name, address = box
    if not name:
        return address
    if name.isascii():
        return formataddr((name, address))
    return f"{_encoded_words(name)} <{address}>"


def address_list(boxes: Iterable[Mailbox]) -> str:
    return ", ".join(mailbox(box) for box in boxes)


def header_block(fields: Sequence[tuple[str, str]]) -> bytes:
    """``Name: value`` lines, folded, CRLF-terminated, UTF-8 where an address needs it."""
    return b"".join(_field(name, value).encode("utf-8") for name, value in fields)


def unstructured(value: str) -> str:
    """A free-text value (Subject, custom headers) ready for :func:`header_block`."""
    return value if value.isascii() else _encoded_words(value)


def _field(name: str, value: str) -> str:
    try:
        return _fold(f"{name}: {value}")
    except HeaderTooLong:
        return _fold(f"{name}: {_encoded_words(value)}")


def _fold(line: str) -> str:
    """Fold at spaces so lines stay within 78 columns where a space allows it."""
    if len(line) <= _FOLD_AT:
        return line + "\r\n"
    words = line.split(" ")
    lines: list[str] = []
    current = words[0]
    for word in words[1:]:
        # Never fold right after "Name:", nor twice in a row: a long token keeps its line.
        if len(current) + 1 + len(word) > _FOLD_AT and current.strip() and current != words[0]:
            lines.append(current)
            current = " " + word  # the space becomes the folding white space
        else:
            current = f"{current} {word}"
    lines.append(current)
    if any(len(part.encode("utf-8")) > _LINE_LIMIT for part in lines):
        raise HeaderTooLong(line[:40])
    return "\r\n".join(lines) + "\r\n"


def _encoded_words(text: str) -> str:
    """RFC 2047 encoded words, space-separated (decoders join adjacent ones)."""
    return " ".join(Header(text, "utf-8").encode(linesep="\n").split())
