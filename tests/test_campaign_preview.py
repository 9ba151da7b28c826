"""A campaign seen before it goes out: one row rendered (CLI and Python), and the first
rows sent to the marketer only, through a real worker and a real TLS + AUTH server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailworker.dev.devserver import DevServer
from mailworker.store.status import status
from mailworker.tasks import campaign_preview as preview
from mailworker.tasks.campaign import CampaignError, campaign_status
from tests.helpers import wait_for_status
from tests.test_cli import mailworker

ROWS = [
    {"email": "ann@example.com", "first_name": "Ann", "plan": "gold"},
    {"email": "bo@example.com", "first_name": "Bo", "plan": "<b>silver</b>"},
    {"email": "cy@example.com", "first_name": "Cy", "plan": "bronze"},
]
TEMPLATE = {
    "subject": "Hi {{ first_name }}",
    "text": "Dear {{ first_name }}, your plan: {{ plan }}.",
    "html": "<p>Dear {{ first_name }}, your plan: {{ plan }}.</p>",
}


def test_preview_renders_one_row_as_the_worker_would_and_queues_nothing() -> None:
    job = preview.preview_campaign(TEMPLATE, ROWS, row=2)
    assert job.to == (("", "bo@example.com"),) and job.subject == "Hi Bo"
    assert job.text == "Dear Bo, your plan: <b>silver</b>."
    assert job.html == "<p>Dear Bo, your plan: &lt;b&gt;silver&lt;/b&gt;.</p>"  # autoescaped
    assert any(name == "List-Unsubscribe" for name, _ in job.headers)
    assert status(job.id) is None
    with pytest.raises(CampaignError, match="fewer rows"):
        preview.preview_campaign(TEMPLATE, ROWS, row=9)


def test_the_cli_prints_headers_and_text_and_writes_the_html(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email,first_name,plan\n" + "".join(
        f"{r['email']},{r['first_name']},{r['plan']}\n" for r in ROWS))  # fmt: skip
    (tmp_path / "t.txt").write_text(TEMPLATE["text"])
    (tmp_path / "h.html").write_text(TEMPLATE["html"])
    out = tmp_path / "out.html"
    run = mailworker(
        "campaign", "preview", str(csv_file), "--row", "3", "--subject", TEMPLATE["subject"],
        "--text", str(tmp_path / "t.txt"), "--html", str(tmp_path / "h.html"),
        "--html-out", str(out), env=environment,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Subject: Hi Cy" in run.stdout and "To: cy@example.com" in run.stdout
    assert "List-Unsubscribe:" in run.stdout and "Dear Cy, your plan: bronze." in run.stdout
    assert out.read_text() == "<p>Dear Cy, your plan: bronze.</p>"


def test_a_test_send_reaches_only_the_marketer_marked_and_uncounted(
    starttls_server: DevServer, celery_worker: Any
) -> None:
    ids = preview.test_campaign(TEMPLATE, ROWS, to="me@example.com", rows=2, campaign_id="tc1")
    assert len(ids) == 2
    for job_id in ids:
        wait_for_status(job_id, "sent")
    arrived = [m for m in starttls_server.messages if any(i.encode() in m.data for i in ids)]
    assert sorted(m.message["Subject"] for m in arrived) == ["[TEST] Hi Ann", "[TEST] Hi Bo"]
    assert all(m.rcpt_tos == ("me@example.com",) for m in arrived)
    for message in arrived:  # the unsubscribe link is the tester's, not a real reader's
        header = str(message.message["List-Unsubscribe"])
        assert "ann" not in header.lower() and "bo@" not in header.lower()
    assert campaign_status("tc1") is None  # no campaign was created or counted
