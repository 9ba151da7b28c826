"""Property tests: whatever a caller passes, send_email either accepts it or raises InvalidEmail."""

from __future__ import annotations

from typing import Any

from hypothesis import (
    example,
    given,
    provisional,  # noqa: F401  (imported now, not lazily mid-test)
    settings,
)
from hypothesis import strategies as st

from settings import load_settings
from tasks import InvalidEmail
from tasks.validation import build_job
from worker.message import build_envelope

SETTINGS = load_settings({"SMTP_URL": "smtps://u:p@h", "DEFAULT_FROM_EMAIL": "a@example.com"})
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@example(to="0@A.aM", subject="\x0c0", text="", headers={})  # form feed: a line break to email
@example(to="a@example.com", subject="x\u2028Bcc: v@example.com", text="x", headers={})
@given(
    to=st.one_of(st.emails(), st.text(), anything),
    subject=st.one_of(st.text(), anything),
    text=st.one_of(st.text(), st.none()),
    headers=st.one_of(
        st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3), anything
    ),
)
def test_any_input_is_accepted_or_refused_with_invalid_email(
    to: Any, subject: Any, text: Any, headers: Any
) -> None:
    try:
        job = build_job(SETTINGS, {"to": to, "subject": subject, "text": text, "headers": headers})
    except InvalidEmail:
        return
    data = build_envelope(job).data
    header_block = data.split(b"\r\n\r\n", 1)[0]
    # No input may add a header line of its own: every line is a known header or a fold.
    names = [
        line.split(b":", 1)[0].lower()
        for line in header_block.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    ]
    allowed = {
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
    } | {name.lower().encode() for name, _ in job.headers}
    assert set(names) <= allowed
