"""The last check of every header block: what it refuses, and that its fast path agrees with
the rules read line by line. The worker's side (a refused job is dead-lettered, nothing is
sent) is in test_hostile_input.py."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailworker.delivery.header_check import UnsafeHeaderBlock, check_header_block
from mailworker.delivery.headers import header_block

GOOD = b"Subject: hi\r\n there\r\nX-Campaign: march\r\n"


def test_a_well_formed_block_passes() -> None:
    check_header_block(GOOD, ["Subject", "X-Campaign"])
    check_header_block(b"X-Long: " + b"a" * 990 + b"\r\n", ["X-Long"])


@pytest.mark.parametrize(
    ("block", "says"),
    [
        (b"Subject: hi\r\nX-Injected: 1\r\n", "fields ['X-Injected']"),
        (b"Subject: hi\nX-Campaign: v\r\n", "bare CR or LF"),
        (b"Subject: hi\rX-Campaign: v\r\n", "bare CR or LF"),
        (b"Subject: a\x00b\r\nX-Campaign: v\r\n", "NUL"),
        (b"Subject: hi\r\n\r\nX-Campaign: v\r\n", "blank line"),
        (b"Subject: hi\r\n   \r\nX-Campaign: v\r\n", "only white space"),
        (b"Subject: hi\r\n\t\r\nX-Campaign: v\r\n", "only white space"),
        (b"Subject: hi\r\nX-Campaign\r\n: v\r\n", "neither a field"),
        (b" Subject: hi\r\nX-Campaign: v\r\n", "no field before it"),
        (b"Subject: " + b"a" * 990 + b"\r\nX-Campaign: v\r\n", "over 998"),
        (b"Subject: hi\r\nX-Campaign: v", "does not end with CRLF"),
        (b"Subject: hi\r\n", "where ['Subject', 'X-Campaign'] were written"),
        (b"Subject: hi\r\nX Campaign: v\r\n", "neither a field"),
    ],
)
def test_a_broken_block_is_refused_and_says_why(block: bytes, says: str) -> None:
    with pytest.raises(UnsafeHeaderBlock, match=re.escape(says)):
        check_header_block(block, ["Subject", "X-Campaign"])


def test_header_block_refuses_what_validation_would_have() -> None:
    """Values that skipped validation: the writer refuses its own block."""
    for value in ("v\r\nBcc: x@example.com", "v\n", "v\rw", "a\x00"):
        with pytest.raises(UnsafeHeaderBlock):
            header_block([("X-Campaign", value)])
    with pytest.raises(UnsafeHeaderBlock):
        header_block([("X-Campaign\n", "v")])


def _oracle(block: bytes, names: list[str]) -> bool:
    """The rules, read line by line, as plainly as possible."""
    if not block.endswith(b"\r\n"):
        return False
    found = []
    for number, line in enumerate(block[:-2].split(b"\r\n")):
        if b"\r" in line or b"\n" in line or b"\x00" in line or len(line) > 998 or not line:
            return False
        if line[0] in b" \t":
            if number == 0 or not line.strip(b" \t"):
                return False
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not name or any(c < 33 or c > 126 for c in name):
            return False
        found.append(name.decode())
    return found == names


line = st.one_of(
    st.sampled_from([b"Subject: hi", b"X-A: v", b"X-A:", b" more", b"\tmore", b"  ", b"\t", b""]),
    st.sampled_from([b"no colon", b"X A: v", b": v", b"X-A: a\rb", b"X-A: a\nb", b"X-A: \x00"]),
    st.builds(lambda n: b"X-A: " + b"a" * n, st.integers(980, 1000)),
    st.binary(max_size=12),
)


@settings(max_examples=1000, deadline=None)
@example(lines=[b"X-A: v", b" \t "], end=b"\r\n", names=["X-A"])
@given(
    lines=st.lists(line, min_size=1, max_size=5),
    end=st.sampled_from([b"\r\n", b"", b"\n"]),
    names=st.lists(st.sampled_from(["Subject", "X-A"]), max_size=3),
)
def test_the_fast_path_agrees_with_the_rules_line_by_line(
    lines: list[bytes], end: bytes, names: list[str]
) -> None:
    block = b"\r\n".join(lines) + end
    try:
        check_header_block(block, names)
    except UnsafeHeaderBlock:
        assert not _oracle(block, names)
    else:
        assert _oracle(block, names)
