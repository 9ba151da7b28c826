"""`mailworker campaign start|preview|test|status|pause|resume|cancel`: bulk campaigns."""

from __future__ import annotations

import json
from pathlib import Path
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


_TEMPLATE_OPTIONS = (
    click.argument("csv_file", type=click.Path(exists=True, dir_okay=False)),
    click.option("--subject", required=True, help="Jinja2 template, e.g. 'Hi {{ first_name }}'."),
    click.option("--text", "text_file", type=click.Path(exists=True), help="Text template file."),
    click.option("--html", "html_file", type=click.Path(exists=True), help="HTML template file."),
    click.option("--from", "from_email", help="Sender (default: DEFAULT_FROM_EMAIL)."),
    click.option("--reply-to", help="Reply-To address."),
    click.option("--account", help="SMTP account (default: 'bulk' if configured, else 'default')."),
)


def _template_options(command: Any) -> Any:
    """The options that describe a campaign's message: start, preview and test share them."""
    for option in reversed(_TEMPLATE_OPTIONS):
        command = option(command)
    return command


def _template(
    subject: str, text_file: str | None, html_file: str | None, from_email: str | None,
    reply_to: str | None,
) -> Any:  # fmt: skip
    from pathlib import Path

    from mailworker.tasks.campaign import CampaignTemplate

    if not text_file and not html_file:
        fail("give --text FILE, --html FILE or both")
    return CampaignTemplate(
        subject=subject,
        text=Path(text_file).read_text() if text_file else None,
        html=Path(html_file).read_text() if html_file else None,
        from_email=from_email,
        reply_to=reply_to,
    )


def _rows(csv_file: str) -> Any:
    import csv

    with open(csv_file, newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


@campaign.command("start")
@_template_options
@click.option("--id", "campaign_id", help="Campaign id; give the same one to resume a start.")
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
    account: str | None,
    campaign_id: str | None,
    send_at: Any,
    chunk_size: int,
    max_queued_batches: int,
    as_json: bool,
) -> None:
    """Queue a campaign to every row of CSV_FILE (an 'email' column; other columns are
    template variables) and print its id."""
    import csv

    from rich.progress import Progress

    from mailworker.tasks.campaign import CampaignError, start_campaign

    current_settings()
    template = _template(subject, text_file, html_file, from_email, reply_to)
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


@campaign.command("preview")
@_template_options
@click.option("--row", default=1, show_default=True, help="The data row to render (1 = first).")
@click.option("--html-out", type=click.Path(dir_okay=False), help="Write the rendered HTML here.")
def campaign_preview(
    csv_file: str, subject: str, text_file: str | None, html_file: str | None,
    from_email: str | None, reply_to: str | None, account: str | None, row: int,
    html_out: str | None,
) -> None:  # fmt: skip
    """Print one row's message as the workers would send it: headers and text. Sends nothing."""
    from mailworker.delivery.message import build_message_bytes
    from mailworker.tasks.campaign import CampaignError
    from mailworker.tasks.campaign_preview import preview_campaign

    current_settings()
    template = _template(subject, text_file, html_file, from_email, reply_to)
    try:
        job = preview_campaign(template, _rows(csv_file), row=row, account=account)
    except (CampaignError, SettingsError) as exc:
        fail(str(exc))
    head = build_message_bytes(job).split(b"\r\n\r\n", 1)[0].decode()
    console.print(f"[bold]row {row}[/bold] -> {job.to[0][1]}", highlight=False)
    console.print(head.replace("\r\n", "\n"), highlight=False, markup=False)
    if job.text is not None:
        console.print("\n" + job.text, highlight=False, markup=False)
    if job.html is not None and html_out:
        Path(html_out).write_text(job.html, encoding="utf-8")
        console.print(f"\nHTML part written to {html_out}", highlight=False)
    elif job.html is not None:
        console.print(f"\n(HTML part: {len(job.html)} characters; --html-out FILE to see it)")


@campaign.command("test")
@_template_options
@click.option("--to", "to", required=True, help="Where the test messages go (you).")
@click.option("--rows", default=3, show_default=True, help="How many of the first rows to send.")
def campaign_test(
    csv_file: str, subject: str, text_file: str | None, html_file: str | None,
    from_email: str | None, reply_to: str | None, account: str | None, to: str, rows: int,
) -> None:  # fmt: skip
    """Send the first rows' messages to one address, subject marked [TEST]. No real
    recipient gets anything, nothing is counted, the unsubscribe link is the tester's."""
    from mailworker.tasks.campaign import CampaignError
    from mailworker.tasks.campaign_preview import test_campaign
    from mailworker.tasks.errors import InvalidEmail

    current_settings()
    template = _template(subject, text_file, html_file, from_email, reply_to)
    try:
        ids = test_campaign(template, _rows(csv_file), to=to, rows=rows, account=account)
    except (CampaignError, InvalidEmail, SettingsError) as exc:
        fail(str(exc))
    for job_id in ids:
        click.echo(job_id)
    errors.print(f"{len(ids)} test message(s) queued to {to}; `mailworker status ID` follows each")


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
