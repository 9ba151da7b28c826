"""Write a message's header blocks: folded at whitespace, encoded only when needed.

The stdlib's ``email.policy`` headers are parsed into objects and folded by a general
folder. That costs about half of building a message, and its folder RFC 2047-encodes an
ASCII token that does not fit in 78 columns: a signed ``List-Unsubscribe`` URL came out as
``=?utf-8?q?=3Chttps=3A//...?=``, which mailbox providers do not read as a link. Here an
ASCII value is only folded (at spaces; a longer token keeps a line to itself, within the
998-octet limit of RFC 5322), and only non-ASCII text is encoded (RFC 2047, by the stdlib's
``email.header``). Values were validated at enqueue time: no CR, LF or other controls.

MIME parameters (a part's ``name`` and ``filename``) are quoted only when plain ASCII that
no reader can take for anything else; any other value is RFC 2231-encoded
(``filename*=utf-8''r%C3%A9sum%C3%A9.pdf``), never left for a reader to decode: the
stdlib's ``add_attachment`` decoded an RFC 2047 encoded word in a quoted file name and wrote
its CR and LF back raw, which let a file name add headers to its part.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from email.header import Header
from email.utils import formataddr
from urllib.parse import quote

from mailworker.delivery.header_check import check_header_block
from mailworker.errors import MailworkerError
from mailworker.store.job import Mailbox

_FOLD_AT = 78  # RFC 5322 2.1.1: SHOULD
_LINE_LIMIT = 998  # RFC 5322 2.1.1: MUST
# Where a fold may go: before a run of spaces and tabs that a word follows. The CRLF goes in
# front of the run, so every continuation line starts with white space and holds a word; a
# run with no word after it (trailing white space) stays on its line. A continuation line
# of only white space is obsolete syntax that RFC 5322 4.2 says must not be generated.
_FOLD_POINT = re.compile(r"(?<![ \t])(?=[ \t]+[^ \t])")


# A parameter value written as a quoted string: no space (folding), no quote or backslash
# (escapes), no "=" or "?" (an encoded word to a lenient reader), no ";" (naive splitting).
_PLAIN_PARAMETER = re.compile(r"[A-Za-z0-9._()+,~!#$&^@-]{1,60}")
# RFC 2231 attribute-char, less "*" and "'": left as is; everything else is %XX (UTF-8).
_ATTRIBUTE_CHAR = "!#$&+.^_`{|}~-"
_SEGMENT = 56  # characters of an RFC 2231 value per continuation: lines stay within 78


class Unfoldable(MailworkerError, ValueError):
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
    """``Name: value`` lines, folded, CRLF-terminated, UTF-8 where an address needs it;
    checked as written (:mod:`worker.header_check`), or :class:`UnsafeHeaderBlock`."""
    block = "".join([_field(name, value) for name, value in fields]).encode("utf-8")
    check_header_block(block, [name for name, _ in fields])
    return block


def unstructured(value: str) -> str:
    """A free-text value (Subject, custom headers) ready for :func:`header_block`."""
    return value if value.isascii() else _encoded_words(value)


def parameterized(value: str, parameters: Sequence[tuple[str, str]]) -> str:
    """``value; attribute="plain"`` or ``value; attribute*=utf-8''%XX..`` (RFC 2045 5.1,
    RFC 2231), a long encoded value as continuations ``attribute*0*=``, ``attribute*1*=``;
    no space inside a parameter, so folding only ever breaks between parameters."""
    return "; ".join([value, *(_parameter(a, v) for a, v in parameters)])


def _parameter(attribute: str, value: str) -> str:
    if _PLAIN_PARAMETER.fullmatch(value):
        return f'{attribute}="{value}"'
    encoded = "utf-8''" + quote(value, safe=_ATTRIBUTE_CHAR)
    if len(encoded) <= _SEGMENT:
        return f"{attribute}*={encoded}"
    # Continuations cut between characters, never inside one's UTF-8 %XX sequence.
    segments, current = [], "utf-8''"
    for char in value:
        piece = quote(char, safe=_ATTRIBUTE_CHAR)
        if len(current) + len(piece) > _SEGMENT:
            segments.append(current)
            current = ""
        current += piece
    segments.append(current)
    return "; ".join(f"{attribute}*{n}*={segment}" for n, segment in enumerate(segments))


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
