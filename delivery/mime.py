"""The MIME entities of a message body: text parts, attachments and the multiparts around them.

Every part's header block is written by :func:`worker.headers.header_block`, as the top-level
one is; nothing goes through ``email.message.EmailMessage`` (whose ``add_attachment`` wrote
an encoded word in a file name back as raw CR LF). An entity is its header fields and its
encoded content; the top-level entity's fields join the message's own header block.

    multipart/mixed                 only with attachments
    ├── text/plain | text/html      or multipart/alternative of both (HTML last, preferred)
    └── <mimetype>; name=...        base64, Content-Disposition: attachment; filename=...
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy, quoprimime

from mailworker.delivery.headers import header_block, parameterized
from mailworker.store.job import Attachment

# The stdlib sends a text body as 7bit only if no line is longer than this (78); so do we.
_LINE_LENGTH: int = policy.SMTP.max_line_length or 78
_QP_LINE = 76  # RFC 2045 6.7 (5): encoded lines at most 76 characters
_BOUNDARY_PREFIX = "=_mailworker_"  # "=_" occurs in no base64 or quoted-printable text


@dataclass(frozen=True)
class Entity:
    fields: list[tuple[str, str]]
    content: bytes

    def as_part(self) -> bytes:
        return header_block(self.fields) + b"\r\n" + self.content


def text(content: str, subtype: str) -> Entity:
    """7bit when every line is ASCII and fits in 78 columns, else quoted-printable: the
    shape ``EmailMessage.set_content`` gives, at a fraction of its cost."""
    lines = content.encode("utf-8").splitlines()
    if all(len(line) <= _LINE_LENGTH for line in lines) and content.isascii():
        cte, payload = "7bit", b"\r\n".join(lines) + b"\r\n"
    else:
        normal = (b"\n".join(lines) + b"\n").decode("latin-1")
        encoded = quoprimime.body_encode(normal, _QP_LINE)
        cte, payload = "quoted-printable", encoded.encode("ascii").replace(b"\n", b"\r\n")
    fields = [("Content-Type", f'text/{subtype}; charset="utf-8"')]
    return Entity(fields + [("Content-Transfer-Encoding", cte)], payload)


def attachment(item: Attachment) -> Entity:
    """Base64 in 76-column lines; the file name quoted if plain ASCII, else RFC 2231."""
    raw = base64.b64decode(item.content_b64)
    name = [("name", item.filename)]
    return Entity(
        [
            ("Content-Type", parameterized(item.mimetype.lower(), name)),
            ("Content-Transfer-Encoding", "base64"),
            ("Content-Disposition", parameterized("attachment", [("filename", item.filename)])),
        ],
        base64.encodebytes(raw).replace(b"\n", b"\r\n"),
    )


def multipart(subtype: str, parts: Sequence[Entity], seed: str) -> Entity:
    """``parts`` between boundaries; the CRLF before each delimiter belongs to the delimiter
    (RFC 2046 5.1.1), not to the part."""
    encoded = [part.as_part() for part in parts]
    boundary = _boundary(subtype, seed, encoded)
    return Entity(
        [("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')],
        f"--{boundary}\r\n".encode()
        + f"\r\n--{boundary}\r\n".encode().join(encoded)
        + f"\r\n--{boundary}--\r\n".encode(),
    )


def _boundary(subtype: str, seed: str, parts: Sequence[bytes]) -> str:
    """Fixed per job and kind (so every attempt sends the same bytes), at most 70 characters
    (RFC 2046), and found in none of the parts: only a 7bit text can hold "=_", and one that
    quotes the boundary gets a numbered one."""
    # Same length for both kinds, so neither boundary is a prefix of the other; short
    # enough that "Content-Type: multipart/alternative; boundary=..." fits in 78 columns.
    digest = hashlib.blake2b(f"{subtype} {seed}".encode(), digest_size=8).hexdigest()
    base = f"{_BOUNDARY_PREFIX}{digest}"
    boundary, n = base, 0
    while any(boundary.encode() in part for part in parts):
        n += 1
        boundary = f"{base}.{n}"
    return boundary
