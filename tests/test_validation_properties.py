"""Property tests: whatever a caller passes, send_email either accepts it or raises InvalidEmail."""

from __future__ import annotations

import email
import email.policy
from typing import Any

from hypothesis import (
    example,
    given,
    provisional,  # noqa: F401  (imported now, not lazily mid-test)
    settings,
)
from hypothesis import strategies as st

from mailworker.delivery.message import build_envelope
from mailworker.settings import load_settings
from mailworker.tasks import InvalidEmail
from mailworker.tasks.validation import build_job
from tests.hostile import ENCODED_WORDS, LINE_BREAKS

SETTINGS = load_settings({"SMTP_URL": "smtps://u:p@h", "DEFAULT_FROM_EMAIL": "a@example.com"})
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
# Text, text with a line break at its end (re.match with "$" let that through), encoded words.
trailing = st.one_of(
    st.text(max_size=20),
    st.tuples(st.text(max_size=20), st.sampled_from(LINE_BREAKS)).map("".join),
    st.sampled_from(ENCODED_WORDS),
)
attachments = st.lists(
    st.fixed_dictionaries(
        {"filename": trailing, "content_b64": st.just("aGk=")},
        optional={"mimetype": trailing | st.sampled_from(["text/plain\n", "Text/HTML"])},
    ),
    max_size=2,
)


@settings(max_examples=300, deadline=None)
@example(
    to="0@A.aM", subject="\x0c0", text="", headers={}, attachments=None
)  # form feed: a line break to email
@example(
    to="a@example.com", subject="x\u2028Bcc: v@example.com", text="x", headers={}, attachments=None
)
@example(to="a@example.com", subject="s", text="t", headers={"X-Campaign\n": "v"}, attachments=None)
@example(
    to="a@example.com",
    subject="s",
    text="t",
    headers={},
    attachments=[{"filename": ENCODED_WORDS[0], "content_b64": "aGk=", "mimetype": "text/plain\n"}],
)
@given(
    to=st.one_of(st.emails(), st.text(), anything),
    subject=st.one_of(trailing, anything),
    text=st.one_of(st.text(), st.none()),
    headers=st.one_of(st.dictionaries(trailing, trailing, max_size=3), anything),
    attachments=st.none() | attachments,
)
def test_any_input_is_accepted_or_refused_with_invalid_email(
    to: Any, subject: Any, text: Any, headers: Any, attachments: Any
) -> None:
    arguments = {"to": to, "subject": subject, "text": text, "headers": headers}
    try:
        job = build_job(SETTINGS, {**arguments, "attachments": attachments})
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
    # Nor a part's header block: each holds only its own Content-* fields.
    for part in email.message_from_bytes(data, policy=email.policy.default).walk():
        assert part.defects == []
        if part.get_content_disposition() == "attachment":
            assert sorted(part.keys()) == [
                "Content-Disposition",
                "Content-Transfer-Encoding",
                "Content-Type",
            ]
