"""Bulk campaigns: one template, a stream of recipients, batches on the ``bulk`` queue.

    campaign_id = start_campaign(
        {"subject": "Hi {{ first_name }}", "text": "...", "html": "...", "from_email": "..."},
        rows,  # any iterable of dicts with an "email" key; other keys are template variables
    )

The template is stored once; recipients are streamed into batches of ``chunk_size`` (with
only their variables, never a rendered message), so neither the producer's memory nor
Redis grows with the campaign; publishing waits while the bulk queue holds more than
``max_queued_batches`` batches. A template or variable error in the first rows stops the
campaign before anything is queued; a bad row later is recorded against that row.

Re-running ``start_campaign`` with the same ``campaign_id`` and the same rows (a producer
that died half-way) queues only the batches not queued yet; a batch queued twice sends
nobody twice (the workers keep a per-recipient sent bitmap). The campaign's state in Redis
is :mod:`mailworker.store.campaigns`'s.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from mailworker.errors import MailworkerError
from mailworker.settings import Settings, SettingsError, get_settings
from mailworker.store import campaigns as state
from mailworker.store.job import EmailJob
from mailworker.tasks import bodies
from mailworker.tasks.addresses import parse_mailbox
from mailworker.tasks.app import BULK_QUEUE, SEND_BATCH_TASK, app
from mailworker.tasks.errors import InvalidEmail
from mailworker.tasks.send import put
from mailworker.tasks.unsubscribe import unsubscribe_headers
from mailworker.tasks.validation import build_job

BATCH_VERSION = 1
# The id goes into each Message-ID (<id>-<n>@domain, RFC 5322 dot-atom) and into Redis hash
# tags ({campaign:<id>}): no line break, no "}", no dot (".." is no dot-atom), no ":".
_CAMPAIGN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


class CampaignError(MailworkerError, ValueError):
    """The campaign cannot start (template, first rows, settings); nothing was queued."""


@dataclass(frozen=True)
class CampaignTemplate:
    subject: str
    text: str | None = None
    html: str | None = None
    from_email: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    list_id: str | None = None  # List-Id; default "<campaign id>.<From domain>"

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


class Renderer:
    """The template compiled once in a sandbox: variables cannot reach Python internals, a
    missing variable is an error (not an empty string), HTML output is autoescaped."""

    def __init__(self, template: CampaignTemplate) -> None:
        plain = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        html = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
        self.parts = {}
        for name, source, env in (
            ("subject", template.subject, plain),
            ("text", template.text, plain),
            ("html", template.html, html),
        ):
            if source is None:
                continue
            try:
                self.parts[name] = env.from_string(source)
            except TemplateError as exc:
                raise CampaignError(f"template error in {name}: {exc}") from None

    def render(self, variables: Mapping[str, Any]) -> dict[str, str]:
        rendered = {}
        for name, part in self.parts.items():
            try:
                rendered[name] = part.render(variables)
            except TemplateError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return rendered


def render_job(
    campaign_id: str,
    template: CampaignTemplate,
    renderer: Renderer,
    account: str,
    index: int,
    address: str,
    variables: Mapping[str, Any],
    settings: Settings,
) -> EmailJob:
    """One recipient's message, validated like any ``send_email`` job (raises ValueError)."""
    rendered = renderer.render({"email": address, **variables})
    list_id = list_id_of(campaign_id, template, settings)
    headers = {**template.headers, **unsubscribe_headers(campaign_id, address, list_id, settings)}
    arguments: dict[str, Any] = {
        "to": address,
        "subject": rendered["subject"],
        "account": account,
        "headers": headers,
        **({"text": rendered["text"]} if "text" in rendered else {}),
        **({"html": rendered["html"]} if "html" in rendered else {}),
        **({"from_email": template.from_email} if template.from_email else {}),
        **({"reply_to": template.reply_to} if template.reply_to else {}),
    }
    job = build_job(settings, arguments)
    if job.message_id is not None or job.shown:
        raise InvalidEmail(
            "headers", "a campaign sets each message's Message-ID, From, To, Cc and Reply-To"
        )
    # A stable id per campaign recipient: every attempt carries the same Message-ID.
    return replace(job, id=f"{campaign_id}-{index}")


def list_id_of(campaign_id: str, template: CampaignTemplate, settings: Settings) -> str:
    """The campaign's List-Id: the template's, or ``<campaign id>.<From domain>``; an
    unsubscribe or complaint suppresses the address for this list."""
    sender = template.from_email or settings.default_from_email
    domain = (sender or "localhost").rpartition("@")[2].rstrip(">")
    return template.list_id or f"{campaign_id}.{domain}"


def start_campaign(
    template: CampaignTemplate | Mapping[str, Any],
    recipients: Iterable[Mapping[str, Any]],
    *,
    campaign_id: str | None = None,
    account: str | None = None,
    send_at: float | None = None,
    chunk_size: int = 200,
    check_rows: int = 20,
    max_queued_batches: int = 50,
    on_batch: Callable[[int], None] | None = None,
) -> str:
    """Check the template, store it, stream ``recipients`` into batches; return the id."""
    settings = get_settings()
    if not isinstance(template, CampaignTemplate):
        template = CampaignTemplate(**template)
    account = account or ("bulk" if "bulk" in settings.accounts else "default")
    campaign_id = campaign_id or uuid.uuid4().hex
    if not _CAMPAIGN_ID.fullmatch(campaign_id):
        raise CampaignError(
            f"campaign id {campaign_id!r}: use 1 to 100 letters, digits, '_' or '-'"
        )
    renderer = Renderer(template)
    rows = iter(recipients)
    first = list(itertools.islice(rows, check_rows))
    _check_first_rows(campaign_id, template, renderer, account, first, settings)
    list_id = list_id_of(campaign_id, template, settings)
    _store(campaign_id, template, account, chunk_size, list_id)

    total = 0
    for number, chunk in enumerate(_chunks(itertools.chain(first, rows), chunk_size)):
        start = number * chunk_size
        total = start + len(chunk)
        batch, invalid, duplicates = _batch(campaign_id, list_id, number, start, chunk)
        if send_at is None or send_at <= time.time():
            if not _wait_for_room(campaign_id, max_queued_batches):
                break  # cancelled while it was being queued
        # An identical batch queued by an earlier run of this producer "exists" already.
        put(batch["id"], batch, BULK_QUEUE, account, task=SEND_BATCH_TASK, send_at=send_at)
        queued = len(batch["recipients"])
        state.mark_batch_queued(campaign_id, batch["id"], queued, invalid, duplicates)
        if on_batch is not None:
            on_batch(total)
    state.set_total(campaign_id, total)
    return campaign_id


def pause(campaign_id: str) -> None:
    state.set_state(campaign_id, "paused")


def resume(campaign_id: str) -> int:
    """Run again; the parked batches are published within a second: how many."""
    state.set_state(campaign_id, "running")
    return state.release_parked(campaign_id)


def cancel(campaign_id: str) -> None:
    """Stop for good: running batches stop before their next message; parked ones run
    once more only to count their recipients cancelled."""
    state.set_state(campaign_id, "cancelled")
    state.release_parked(campaign_id)


def campaign_status(campaign_id: str) -> dict[str, Any] | None:
    """State, totals and counters of a campaign, or ``None`` if there is no such campaign."""
    return state.status(campaign_id)


def campaign_errors(campaign_id: str, limit: int = 100) -> dict[int, str]:
    """Why recipients were not sent, by row number (at most ``limit``)."""
    return state.errors(campaign_id, limit)


def load_template(campaign_id: str) -> tuple[CampaignTemplate, dict[str, str]]:
    meta = state.meta(campaign_id)
    if not meta:
        raise KeyError(campaign_id)
    return CampaignTemplate(**json.loads(meta["template"])), meta


def _check_first_rows(
    campaign_id: str,
    template: CampaignTemplate,
    renderer: Renderer,
    account: str,
    rows: list[Mapping[str, Any]],
    settings: Settings,
) -> None:
    if not rows:
        raise CampaignError("no recipients")
    for number, row in enumerate(rows, start=1):
        if "email" not in row:
            raise CampaignError(f"row {number} has no 'email' column (columns: {sorted(row)})")
        try:
            render_job(
                campaign_id, template, renderer, account, number, row["email"], row, settings
            )
        except SettingsError:
            raise
        except (ValueError, InvalidEmail) as exc:
            if isinstance(exc, InvalidEmail) and exc.field == "to":
                continue  # a bad address is that row's problem, not the template's
            raise CampaignError(f"row {number}: {exc}") from None


def _store(
    campaign_id: str, template: CampaignTemplate, account: str, chunk_size: int, list_id: str
) -> None:
    existing = state.meta(campaign_id)
    if existing:
        if existing.get("digest") != template.digest():
            raise CampaignError(f"campaign {campaign_id} exists with a different template")
        if existing.get("state") == "cancelled":
            raise CampaignError(f"campaign {campaign_id} was cancelled")
        if int(existing.get("chunk_size", chunk_size)) != chunk_size:
            raise CampaignError(f"campaign {campaign_id} was started with another chunk_size")
        return
    state.create(
        campaign_id,
        {
            "template": json.dumps(asdict(template)),
            "digest": template.digest(),
            "account": account,
            "state": "running",
            "chunk_size": chunk_size,
            "list_id": list_id,
            "created_at": time.time(),
        },
    )


def _batch(
    campaign_id: str, list_id: str, number: int, start: int, chunk: list[Mapping[str, Any]]
) -> tuple[dict[str, Any], dict[int, str], int]:
    """One batch: its recipients (each address once), invalid rows, duplicate count. Its id
    derives from who is in it, so re-sorted rows make new batches, the same rows the same."""
    recipients, invalid, seen = [], {}, set()
    for index, row in enumerate(chunk, start=start):
        try:
            _, address = parse_mailbox("to", row.get("email"))
        except InvalidEmail as exc:
            invalid[index] = f"invalid address: {exc}"
            continue
        if state.recipient_key(address) in seen:
            continue  # the same person twice in a batch: one message
        seen.add(state.recipient_key(address))
        variables = {k: _text(v) for k, v in row.items() if k != "email"}
        recipients.append([index, address, variables])
    content = hashlib.sha1("\n".join(sorted(seen)).encode()).hexdigest()[:10]
    batch = {
        "v": BATCH_VERSION,
        "id": f"{campaign_id}:{number}-{content}",
        "campaign": campaign_id,
        "list_id": list_id,
        "attempt": 1,
        "created_at": time.time(),  # retries give up after RETRY_MAX_AGE from here
        "recipients": recipients,
    }
    return batch, invalid, len(chunk) - len(recipients) - len(invalid)


def _chunks(rows: Iterator[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def _text(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def _wait_for_room(campaign_id: str, max_queued_batches: int) -> bool:
    """Pace the producer: keep at most ``max_queued_batches`` batches waiting in Redis, and
    queue nothing while the campaign is paused; ``False`` once it is cancelled."""
    while True:
        found = state.state_of(campaign_id) or "running"
        if found == "cancelled":
            return False
        if found == "running" and state.waiting_batches(BULK_QUEUE) < max_queued_batches:
            return True
        time.sleep(0.2)


# Producers only publish batches; the worker provides the body
# (mailworker.worker.campaign_runner.run_batch, see mailworker.tasks.bodies).
@app.task(name=SEND_BATCH_TASK, bind=True)
def send_batch(self: Any, job: dict[str, Any]) -> dict[str, Any]:
    return bodies.run(SEND_BATCH_TASK, self, job)
