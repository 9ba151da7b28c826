"""The last look at every header block before it is sent: refuse it rather than send it broken.

:func:`worker.headers.header_block` runs this on each block it writes (the message's own and
every MIME part's) and :func:`worker.dkim.dkim_sign` on the ``DKIM-Signature`` it adds, on
the exact bytes that go on the wire. Validation at enqueue time should make it redundant;
it holds for a job that skipped validation (an older producer, a payload written to Redis by
hand) and for a bug in our own writing. A refused message raises :class:`UnsafeHeaderBlock`,
a ``ValueError``, which the worker dead-letters as "unbuildable" instead of retrying.

A block passes if every line ends in CRLF with no other CR or LF, no NUL, and at most 998
octets (RFC 5322 2.1.1); every line is either a field, ``name:`` with a printable-ASCII
name, or a continuation (white space, then something else: RFC 5322 4.2 forbids generating
a line of only white space); there is no blank line inside; and the fields are exactly the
ones the writer meant, in order, so a value can never have added one of its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mailworker.errors import MailworkerError

_LINE_LIMIT = 998
_FIELD_NAME = re.compile(rb"[!-9;-~]+")  # RFC 5322 ftext
# The whole rule in one pattern (the fast path, about a microsecond): field lines, each
# followed by continuation lines that start with white space and hold something else.
_WELL_FORMED = re.compile(
    rb"(?:[!-9;-~]+:[^\r\n\x00]*\r\n(?:[ \t]+[^ \t\r\n\x00][^\r\n\x00]*\r\n)*)+"
)
_FIELD_NAMES = re.compile(rb"(?:\A|\n)([!-9;-~]+):")
_WSP = b" \t"


class UnsafeHeaderBlock(MailworkerError, ValueError):
    """A header block that would not reach the reader as written; nothing was sent."""


def check_header_block(block: bytes, names: Sequence[str]) -> None:
    """Raise :class:`UnsafeHeaderBlock` unless ``block`` is the fields ``names``, well formed."""
    if (
        _WELL_FORMED.fullmatch(block)
        and (len(block) <= _LINE_LIMIT or _longest_line(block) <= _LINE_LIMIT)
        and [name.decode() for name in _FIELD_NAMES.findall(block)] == list(names)
    ):
        return
    _refuse(block, names)


def _longest_line(block: bytes) -> int:
    return max(len(line) for line in block.split(b"\r\n"))


def _refuse(block: bytes, names: Sequence[str]) -> None:
    """Say what is wrong, line by line (only for a block already known to be unsafe)."""
    if not block.endswith(b"\r\n"):
        raise UnsafeHeaderBlock("the header block does not end with CRLF; not sent")
    found = []
    for number, line in enumerate(block[:-2].split(b"\r\n"), start=1):
        problem = _line_problem(line, first=number == 1)
        if problem:
            raise UnsafeHeaderBlock(f"header line {number}: {problem}; not sent")
        if line[:1] not in (b" ", b"\t"):
            found.append(line[: line.index(b":")].decode("ascii"))
    unexpected = [name[:40] for name in found if name not in names]
    raise UnsafeHeaderBlock(
        f"the header block has fields {unexpected or found} where {list(names)} were written"
        "; not sent"
    )


def _line_problem(line: bytes, *, first: bool) -> str | None:
    if b"\r" in line or b"\n" in line:
        return "a bare CR or LF"
    if b"\x00" in line:
        return "a NUL"
    if len(line) > _LINE_LIMIT:
        return f"{len(line)} octets, over {_LINE_LIMIT}"
    if not line:
        return "a blank line inside the header block"
    if line[:1] in (b" ", b"\t"):
        if first:
            return "a continuation line with no field before it"
        if not line.strip(_WSP):
            return "a continuation line of only white space"
        return None
    name, colon, _ = line.partition(b":")
    if not colon or not _FIELD_NAME.fullmatch(name):
        return "neither a field (name:) nor a continuation"
    return None
