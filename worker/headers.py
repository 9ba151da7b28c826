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

import re
from collections.abc import Iterable, Sequence
from email.header import Header
from email.utils import formataddr

from tasks.job import Mailbox

_FOLD_AT = 78  # RFC 5322 2.1.1: SHOULD
_LINE_LIMIT = 998  # RFC 5322 2.1.1: MUST
# Where a fold may go: before a run of spaces and tabs that a word follows. The CRLF goes in
# front of the run, so every continuation line starts with white space and holds a word; a
# run with no word after it (trailing white space) stays on its line. A continuation line
# of only white space is obsolete syntax that RFC 5322 4.2 says must not be generated.
_FOLD_POINT = re.compile(r"(?<![ \t])(?=[ \t]+[^ \t])")


class Unfoldable(ValueError):
    """A word longer than a header line may be (the caller encodes it instead)."""


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
    except Unfoldable:
        return _fold(f"{name}: {_encoded_words(value)}")


def _fold(line: str) -> str:
    """Fold before white space so lines stay within 78 columns where white space allows it;
    removing each CRLF (RFC 5322 2.2.3 unfolding) gives ``line`` back."""
    if len(line) <= _FOLD_AT:
        return line + "\r\n"
    name, *pieces = _FOLD_POINT.split(line)
    # Never fold right after "Name:"; a word longer than a line keeps a line to itself.
    lines = [name + pieces[0]] if pieces else [name]
    for piece in pieces[1:]:
        if len(lines[-1]) + len(piece) > _FOLD_AT:
            lines.append(piece)
        else:
            lines[-1] += piece
    if any(len(part.encode("utf-8")) > _LINE_LIMIT for part in lines):
        raise Unfoldable(line[:40])
    return "\r\n".join(lines) + "\r\n"


def _encoded_words(text: str) -> str:
    """RFC 2047 encoded words, space-separated (decoders join adjacent ones)."""
    return " ".join(Header(text, "utf-8").encode(linesep="\n").split())
