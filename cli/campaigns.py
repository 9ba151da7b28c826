"""`mailworker campaign start|status|pause|resume|cancel`: bulk campaigns."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from mailworker.cli.base import (
    EXIT_FAILED,
    console,
    current_settings,
    errors,
    fail,
    main,
    shown_value,
)
from mailworker.settings import SettingsError


@main.group()
def campaign() -> None:
    """Bulk campaigns: start one from a CSV, watch it, pause, resume or cancel it."""


@campaign.command("start")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--subject", required=True, help="Jinja2 template, e.g. 'Hi {{ first_name }}'.")
@click.option("--text", "text_file", type=click.Path(exists=True), help="Plain-text template file.")
@click.option("--html", "html_file", type=click.Path(exists=True), help="HTML template file.")
@click.option("--from", "from_email", help="Sender (default: DEFAULT_FROM_EMAIL).")
@click.option("--reply-to", help="Reply-To address.")
@click.option("--id", "campaign_id", help="Campaign id; give the same one to resume a start.")
@click.option("--account", help="SMTP account (default: 'bulk' if configured, else 'default').")
@click.option("--send-at", type=click.DateTime(), help="Start later (local time, ISO format).")
@click.option("--chunk-size", default=200, show_default=True, help="Recipients per batch.")
@click.option(
    "--max-queued-batches", default=50, show_default=True, help="Pace: batches waiting at most."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def campaign_start(
    csv_file: str,
    subject: str,
    text_file: str | None,
    html_file: str | None,
    from_email: str | None,
    reply_to: str | None,
    campaign_id: str | None,
    account: str | None,
    send_at: Any,
    chunk_size: int,
    max_queued_batches: int,
    as_json: bool,
) -> None:
    """Queue a campaign to every row of CSV_FILE (an 'email' column; other columns are
    template variables) and print its id."""
    import csv
    from pathlib import Path

    from rich.progress import Progress

    from mailworker.tasks.campaign import CampaignError, CampaignTemplate, start_campaign

    current_settings()
    if not text_file and not html_file:
        fail("give --text FILE, --html FILE or both")
    template = CampaignTemplate(
        subject=subject,
        text=Path(text_file).read_text() if text_file else None,
        html=Path(html_file).read_text() if html_file else None,
        from_email=from_email,
        reply_to=reply_to,
    )
    with (
        open(csv_file, newline="", encoding="utf-8") as handle,
        Progress(console=errors, transient=True) as progress,
    ):
        bar = progress.add_task("queueing", total=None)
        try:
            result = start_campaign(
                template,
                csv.DictReader(handle),
                campaign_id=campaign_id,
                account=account,
                send_at=send_at.timestamp() if send_at else None,
                chunk_size=chunk_size,
                max_queued_batches=max_queued_batches,
                on_batch=lambda queued: progress.update(bar, completed=queued),
            )
        except (CampaignError, SettingsError) as exc:
            fail(f"{exc}; nothing was queued" if isinstance(exc, CampaignError) else str(exc))
    click.echo(json.dumps({"campaign_id": result}) if as_json else result)


@campaign.command("status")
@click.argument("campaign_id")
@click.option("--watch", is_flag=True, help="Show a live progress bar until it is done.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def campaign_status_command(campaign_id: str, watch: bool, as_json: bool) -> None:
    """Counters of a campaign (sent, failed, suppressed, ...), its rate and ETA."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from mailworker.tasks.campaign import campaign_status

    current_settings()
    record = campaign_status(campaign_id)
    if record is None:
        fail(f"no campaign {campaign_id}", EXIT_FAILED)
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    if watch:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[rate]:.0f}/s"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task(campaign_id, total=record["total"], rate=0.0)
            last = (time.monotonic(), record["done"])
            while record["state"] != "cancelled" and not _finished(record):
                time.sleep(1)
                record = campaign_status(campaign_id) or record
                now = time.monotonic()
                rate = (record["done"] - last[1]) / max(now - last[0], 1e-6)
                last = (now, record["done"])
                progress.update(bar, completed=record["done"], total=record["total"], rate=rate)
    table = Table(show_header=False, box=None)
    for key, value in record.items():
        table.add_row(key, f"{value:.2%}" if key.endswith("_rate") else shown_value(key, value))
    console.print(table)


def _finished(record: dict[str, Any]) -> bool:
    return record["total"] is not None and record["done"] >= record["total"]


@campaign.command("pause")
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def campaign_pause(campaign_id: str, as_json: bool) -> None:
    """Stop sending; batches wait (in Redis) until resume."""
    _campaign_control(campaign_id, "pause", as_json)


@campaign.command("resume")
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def campaign_resume(campaign_id: str, as_json: bool) -> None:
    """Continue a paused campaign."""
    _campaign_control(campaign_id, "resume", as_json)


@campaign.command("cancel")
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def campaign_cancel(campaign_id: str, as_json: bool) -> None:
    """Send nothing more for this campaign (what was sent stays sent)."""
    _campaign_control(campaign_id, "cancel", as_json)


def _campaign_control(campaign_id: str, action: str, as_json: bool) -> None:
    from mailworker.tasks import campaign as campaigns

    current_settings()
    try:
        getattr(campaigns, action)(campaign_id)
    except KeyError:
        fail(f"no campaign {campaign_id}", EXIT_FAILED)
    if as_json:
        click.echo(json.dumps({"campaign_id": campaign_id, "action": action, "ok": True}))
    else:
        console.print(f"campaign {campaign_id}: {action} done")
