"""The message bytes mailworker writes itself parse to what the stdlib's EmailMessage builds.

worker/message.py writes headers and simple bodies directly (about 50x cheaper than
``email.message.EmailMessage``); these properties hold it to the stdlib's meaning for every
input the producer accepts, and pin the List-Unsubscribe fix: a long ASCII URL is folded,
never RFC 2047-encoded (providers do not read an encoded List-Unsubscribe).
"""

from __future__ import annotations

import base64
import email
import email.policy
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from settings import load_settings
from tasks import InvalidEmail
from tasks.job import EmailJob
from tasks.validation import build_job
from worker.message import build_envelope

SETTINGS = load_settings({"SMTP_URL": "smtps://u:p@h", "DEFAULT_FROM_EMAIL": "a@example.com"})
text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300
) | st.sampled_from(["", "x", ".\n..\n.", "a\r\nb\rc\n", "é" * 90, "w " * 60, "x" * 200])
name = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=30)


def _reference(job: EmailJob) -> bytes:
    """How the stdlib would build the job (the code mailworker used before)."""
    message = EmailMessage(policy=email.policy.SMTP.clone(cte_type="7bit"))

    def address(box: tuple[str, str]) -> Address:
        local, _, domain = box[1].rpartition("@")
        return Address(display_name=box[0], username=local, domain=domain)

    message["From"] = address(job.from_email)
    message["To"] = [address(m) for m in job.to]
    message["Subject"] = job.subject
    for header, value in job.headers:
        message[header] = value
    if job.text is not None:
        message.set_content(job.text)
        if job.html is not None:
            message.add_alternative(job.html, subtype="html")
    else:
        message.set_content(job.html or "", subtype="html")
    for attachment in job.attachments:
        maintype, _, subtype = attachment.mimetype.partition("/")
        message.add_attachment(
            base64.b64decode(attachment.content_b64),
            maintype=maintype,
            subtype=subtype,
            filename=attachment.filename,
        )
    return message.as_bytes()


def _normal(content: str | bytes) -> str | bytes:
    return content.replace("\r\n", "\n") if isinstance(content, str) else content


def _meaning(data: bytes) -> dict[str, Any]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    bodies = [
        (part.get_content_type(), _normal(part.get_content()))
        for part in message.walk()
        if not part.is_multipart()
    ]
    return {
        "from": [(a.display_name.strip(), a.addr_spec) for a in message["From"].addresses],
        "to": [(a.display_name.strip(), a.addr_spec) for a in message["To"].addresses],
        # Edge spaces: the stdlib drops them around encoded words; we keep them.
        "subject": str(message["Subject"]).strip(),
        "extra": str(message.get("X-Campaign", "")).strip(),
        "type": message.get_content_type(),
        "bodies": bodies,
        "defects": [type(d).__name__ for part in message.walk() for d in part.defects],
    }


@settings(max_examples=300, deadline=None)
@given(
    subject=text,
    body=text,
    html=st.none() | text,
    display=name,
    extra=st.none() | text,
    attach=st.booleans(),
)
def test_our_bytes_mean_what_the_stdlib_builds(
    subject: str, body: str, html: str | None, display: str, extra: str | None, attach: bool
) -> None:
    arguments: dict[str, Any] = {
        "to": [f'"{display}" <reader@example.com>' if display else "reader@example.com"],
        "subject": subject,
        "text": body,
        "html": html,
    }
    if extra is not None:
        arguments["headers"] = {"X-Campaign": extra}
    if attach:
        content = base64.b64encode(b"%PDF-1.4 ...").decode()
        arguments["attachments"] = [{"filename": "a.pdf", "content_b64": content}]
    try:
        job = build_job(SETTINGS, arguments)
    except InvalidEmail:
        return
    ours, theirs = _meaning(build_envelope(job).data), _meaning(_reference(job))
    assert ours["defects"] == []
    assert {k: v for k, v in ours.items() if k != "defects"} == {
        k: v for k, v in theirs.items() if k != "defects"
    }


def test_a_long_list_unsubscribe_url_is_folded_never_encoded() -> None:
    url = "https://app.example.com/unsubscribe?token=" + "t0K3n" * 30
    job = build_job(
        SETTINGS,
        {
            "to": "reader@example.com",
            "subject": "s",
            "text": "t",
            "headers": {"List-Unsubscribe": f"<{url}>, <mailto:unsubscribe@example.com>"},
        },
    )
    data = build_envelope(job).data
    header = data.split(b"\r\n\r\n")[0].decode()
    assert f"List-Unsubscribe: <{url}>," in header
    assert "=?utf-8?" not in header
    assert all(len(line) <= 998 for line in header.split("\r\n"))
