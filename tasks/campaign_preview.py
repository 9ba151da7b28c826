"""See a campaign before it goes out: one row rendered, or the first rows sent to yourself.

    job = preview_campaign(template, rows, row=7)        # the EmailJob row 7 would get
    ids = test_campaign(template, rows, to="me@example.com", rows=3)

A preview renders exactly as the bulk worker does (the sandboxed template, the row's
variables, its unsubscribe headers and List-Id) and queues nothing. A test send renders
the first rows the same way but addresses each to ``to``, marks the subject ``[TEST]``,
gives it the unsubscribe link of ``to`` (a click never unsubscribes a real recipient) and
sends it as a transactional job through the campaign's account: it is not counted in any
campaign, and the real recipients get nothing.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from mailworker.settings import get_settings
from mailworker.store.job import EmailJob
from mailworker.tasks.addresses import parse_mailbox
from mailworker.tasks.campaign import (
    CampaignError,
    CampaignTemplate,
    Renderer,
    render_job,
)
from mailworker.tasks.send import enqueue

TEST_MARK = "[TEST] "


def preview_campaign(
    template: CampaignTemplate | Mapping[str, Any],
    recipients: Iterable[Mapping[str, Any]],
    *,
    row: int = 1,
    campaign_id: str = "preview",
    account: str | None = None,
) -> EmailJob:
    """The message row ``row`` (1 = the first data row) would get; raises
    :class:`CampaignError` if there is no such row or it cannot be rendered."""
    if row < 1:
        raise CampaignError(f"row {row}: rows are counted from 1")
    found = next(itertools.islice(iter(recipients), row - 1, None), None)
    if found is None:
        raise CampaignError(f"row {row}: the list has fewer rows")
    return _render(template, campaign_id, account, row - 1, found, None)


def test_campaign(
    template: CampaignTemplate | Mapping[str, Any],
    recipients: Iterable[Mapping[str, Any]],
    *,
    to: str,
    rows: int = 3,
    campaign_id: str | None = None,
    account: str | None = None,
) -> list[str]:
    """Send the first ``rows`` renderings to ``to``; the job ids (see the module)."""
    _, address = parse_mailbox("to", to)
    campaign_id = campaign_id or f"test-{uuid.uuid4().hex[:12]}"
    ids = []
    for index, found in enumerate(itertools.islice(iter(recipients), rows)):
        job = _render(template, campaign_id, account, index, found, address)
        job = replace(job, id=str(uuid.uuid4()), subject=TEST_MARK + job.subject,
                      tags=(("campaign_test", campaign_id), ("row", str(index + 1))))  # fmt: skip
        ids.append(str(enqueue(job).id))
    if not ids:
        raise CampaignError("the list has no rows to test with")
    return ids


test_campaign.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def _render(
    template: CampaignTemplate | Mapping[str, Any],
    campaign_id: str,
    account: str | None,
    index: int,
    found: Mapping[str, Any],
    to: str | None,
) -> EmailJob:
    settings = get_settings()
    if not isinstance(template, CampaignTemplate):
        template = CampaignTemplate(**template)
    account = account or ("bulk" if "bulk" in settings.accounts else "default")
    variables = {k: v for k, v in found.items() if k != "email"}
    try:
        _, address = parse_mailbox("email", found.get("email"))
        return render_job(
            campaign_id, template, Renderer(template), account, index, to or address,
            {"email": address, **variables}, settings,
        )  # fmt: skip
    except ValueError as exc:
        raise CampaignError(f"row {index + 1}: {exc}") from None
