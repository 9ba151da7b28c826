"""Hostile input for every path that builds a message, and what a server must receive.

The strategies give arbitrary strings, Unicode, controls, header and SMTP-command injections,
line breaks at the end of or inside every field, RFC 2047 encoded words where a reader (or
the stdlib) might decode them, huge values, nested structures and wrong types. The checks
read what a real server received: :func:`check_wire_bytes` (nothing added: no header, line
break or SMTP command) and :func:`check_received` (exactly the job, part by part, with no
parser defect). Used by test_hostile_input (send_email), test_django (the email backend) and
test_campaigns (rendered campaign rows).
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
from typing import Any

from hypothesis import strategies as st

from mailworker.store.job import EmailJob

INJECTIONS = [
    "\r\nBcc: injected@evil.example",
    "\nBcc: injected@evil.example",
    "\rX-Injected: 1",
    "\r\n.\r\nMAIL FROM:<injected@evil.example>\r\nRCPT TO:<injected@evil.example>\r\nDATA\r\n",
    "\u2028X-Injected: 1",
    "\x00",
    "\x0bX-Injected: 1",
    "\x85X-Injected: 1",
    "=?utf-8?q?=0D=0ABcc:_injected@evil.example?=",
    "ann@example.com>, <injected@evil.example",
    "../../etc/passwd",
    "C:\\Windows\\win.ini",
    "\ud800",
]
# Everything Python's str.splitlines() or the email package treats as a line break.
LINE_BREAKS = ["\n", "\r\n", "\r", "\r\n\r\n", "\n\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028"]
# RFC 2047 encoded words that decode to a line break, a header, a blank line and text,
# a quote that would end a quoted string, or just a name.
ENCODED_WORDS = [
    "=?utf-8?q?invoice.pdf=22=0D=0AX-Injected:_1?=",
    "=?utf-8?q?invoice.pdf=22=0D=0A=0D=0Acaller_text?=",
    "=?utf-8?b?aW52b2ljZS5wZGYiDQpYLUluamVjdGVkOiAx?=",
    "=?utf-8?q?=0ABcc:_injected@evil.example?=",
    "=?iso-8859-1?q?caf=E9.pdf?=",
    "=?utf-8?q?a?= =?utf-8?q?b?=",
    "=?utf-8?q?text/plain=0D=0A?=",
]
hostile_text = st.one_of(
    st.text(),
    st.sampled_from(INJECTIONS),
    st.tuples(st.text(max_size=8), st.sampled_from(INJECTIONS)).map("".join),
    st.integers(1000, 30_000).map(lambda n: "A" * n),  # over MAX_MESSAGE_BYTES,
)
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | hostile_text | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
benign = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30)


def leaning(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly values that pass, so the accepted side is explored too; a quarter hostile."""
    return st.integers(0, 3).flatmap(lambda roll: bad if roll == 0 else good)


def broken(good: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A value that would pass, with a line break at its end, its start or inside it."""

    def insert(value: str, brk: str, where: float) -> str:
        at = round(where * len(value))
        return value[:at] + brk + value[at:]

    return st.builds(insert, good, st.sampled_from(LINE_BREAKS), st.sampled_from([1.0, 0.0, 0.5]))


def hostile(good: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """``good`` mostly; else ``good`` with a line break, an encoded word, or hostile text."""
    return leaning(
        good,
        st.one_of(
            broken(good),
            st.sampled_from(ENCODED_WORDS),
            st.tuples(good, st.sampled_from(ENCODED_WORDS)).map("".join),
            hostile_text,
        ),
    )


good_address = st.one_of(
    st.emails(),
    st.sampled_from(["Ann <ann@example.com>", "bob@example.com", "Zoë <zoe@bücher.example>"]),
    st.builds(lambda name: f'"{name}" <ann@example.com>', benign),
)
address = leaning(
    good_address,
    st.one_of(
        broken(st.sampled_from(["ann@example.com", "Ann <ann@example.com>"])),
        hostile_text,
        st.tuples(st.sampled_from(["ann@example.com", "Ann <ann@example.com>"]), hostile_text).map(
            "".join
        ),
    ),
)
addresses = leaning(st.one_of(address, st.lists(address, max_size=3)), anything)
good_filename = st.one_of(
    st.sampled_from(["invoice.pdf", "résumé.pdf", "a b.txt", 'q"uote;.txt', "%41.txt", "x=?y"]),
    st.sampled_from(ENCODED_WORDS),
    benign.map(lambda name: name + ".txt"),
    st.integers(60, 255).map(lambda n: "é" * n),
)
filename = hostile(good_filename)
good_mimetype = st.sampled_from(
    ["application/pdf", "text/plain", "Image/PNG", "image/svg+xml", "application/vnd.ms-excel"]
)
mimetype = leaning(
    good_mimetype,
    st.one_of(
        broken(good_mimetype),
        st.sampled_from(ENCODED_WORDS),
        st.sampled_from(["text/plain; charset=utf-8", "multipart/mixed", "message/rfc822"]),
        st.sampled_from(["text/plaín", "text/", "/plain", "text"]),
        hostile_text,
    ),
)
attachment = st.fixed_dictionaries(
    {
        "filename": filename,
        "content_b64": leaning(
            st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()), hostile_text
        ),
    },
    optional={"mimetype": mimetype},
)
good_header_name = st.from_regex(r"X-[A-Za-z-]{1,10}", fullmatch=True)
header_name = leaning(
    good_header_name,
    st.one_of(
        broken(good_header_name),
        st.integers(75, 1000).map(lambda n: "X-" + "a" * n),
        st.sampled_from(["X-Ünicode", "X Campaign", "X-A:", "Subject", "content-type"]),
        st.text(max_size=12),
    ),
)
long_value = st.integers(900, 1000).map(lambda n: "v " * (n // 2))  # near the line limit
header_value = hostile(st.integers(0, 5).flatmap(lambda roll: long_value if roll == 0 else benign))

# Header lines mailworker writes; a caller's own headers are added per job.
OWN_HEADERS = {
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
}
SMTP_VERBS = (b"MAIL ", b"RCPT ", b"DATA", b"RSET", b"QUIT", b"AUTH ", b"EHLO ", b"HELO ")


def check_wire_bytes(data: bytes, allowed_headers: set[str]) -> None:
    """No header, no line break and no SMTP command the job did not ask for."""
    assert b"\r" not in data.replace(b"\r\n", b"") and b"\n" not in data.replace(b"\r\n", b"")
    assert b"\x00" not in data
    parsed = email.message_from_bytes(data, policy=email.policy.SMTP)
    for part in parsed.walk():
        header_block = part.as_bytes().split(b"\r\n\r\n", 1)[0]
        for line in header_block.split(b"\r\n"):
            assert not line.upper().startswith(SMTP_VERBS), line
        names = {name.lower() for name in part.keys()}
        assert names <= allowed_headers, names - allowed_headers
        assert "injected" not in str(part.get("bcc", "")) and "bcc" not in names
        filename = part.get_filename()
        if filename is not None:
            assert not any(c in filename for c in "/\\\r\n\x00") and filename not in (".", "..")
    recipients = ",".join(str(parsed.get(h, "")) for h in ("to", "cc", "reply-to"))
    assert "injected@evil.example" not in recipients


def _unfold(value: str) -> str:
    """RFC 5322 2.2.3: a CRLF followed by white space is removed, nothing else."""
    return re.sub(r"\r?\n(?=[ \t])", "", value)


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")


def _top_headers(job: EmailJob, *, multipart: bool) -> list[str]:
    names = ["from", "subject", "date", "message-id", "mime-version", "content-type"]
    names += [
        n for n, boxes in (("to", job.to), ("cc", job.cc), ("reply-to", job.reply_to)) if boxes
    ]
    names += [] if multipart else ["content-transfer-encoding"]
    return sorted(names + [name.lower() for name, _ in job.headers])


def check_received(data: bytes, job: EmailJob) -> None:
    """What a client parses from ``data`` is exactly the job: Python's email parser finds no
    defect, the top-level header block holds our headers and the caller's and no other,
    each caller value comes back unfolded as given, and every part has its own headers and
    no other, with the body or attachment, file name and type the caller gave."""
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    raw = email.message_from_bytes(data, policy=email.policy.compat32)  # values undecoded
    for part in parsed.walk():
        assert part.defects == [], (part.get_content_type(), part.defects)
    assert sorted(n.lower() for n in parsed.keys()) == _top_headers(
        job, multipart=parsed.is_multipart()
    )
    for name, value in (("Subject", job.subject), *job.headers):
        if value.isascii():  # written as given, only folded
            assert _unfold(raw[name]) == value.lstrip(" \t"), name
        else:  # RFC 2047-encoded; decoders differ only in white space around encoded words
            assert str(parsed[name]).split() == value.split(), name
    leaves = [part for part in parsed.walk() if not part.is_multipart()]
    bodies = [(job.text, "text/plain"), (job.html, "text/html")]
    bodies = [(content, kind) for content, kind in bodies if content is not None]
    assert len(leaves) == len(bodies) + len(job.attachments)
    for part, (content, kind) in zip(leaves, bodies, strict=False):
        assert part.get_content_type() == kind and part.get_content_disposition() is None
        assert _lines(part.get_content()) == _lines(content)
        if part is not parsed:
            assert sorted(part.keys()) == ["Content-Transfer-Encoding", "Content-Type"]
    for part, attachment in zip(leaves[len(bodies) :], job.attachments, strict=True):
        assert sorted(part.keys()) == [
            "Content-Disposition",
            "Content-Transfer-Encoding",
            "Content-Type",
        ]
        assert part.get_content_type() == attachment.mimetype.lower()
        assert part.get_content_disposition() == "attachment"
        assert part.get_filename() == attachment.filename
        assert part.get_payload(decode=True) == base64.b64decode(attachment.content_b64)
