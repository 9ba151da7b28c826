"""`mailworker send` and `mailworker status`: one message, one job."""

from __future__ import annotations

import json

import click
from rich.table import Table

from mailworker.cli.base import (
    EXIT_FAILED,
    console,
    current_settings,
    fail,
    main,
    shown_value,
)
from mailworker.settings import SettingsError


@main.command()
@click.option("--to", "to", multiple=True, required=True, help="Recipient; repeat for more.")
@click.option("--subject", required=True, help="Subject line.")
@click.option("--text", help="Plain-text body.")
@click.option("--html", help="HTML body.")
@click.option("--from", "from_email", help="Sender (default: DEFAULT_FROM_EMAIL).")
@click.option("--cc", multiple=True, help="Cc recipient; repeat for more.")
@click.option("--bcc", multiple=True, help="Bcc recipient; repeat for more.")
@click.option("--account", default="default", show_default=True, help="SMTP account name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def send(
    to: tuple[str, ...],
    subject: str,
    text: str | None,
    html: str | None,
    from_email: str | None,
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    account: str,
    as_json: bool,
) -> None:
    """Queue one message and print its job id."""
    from mailworker.tasks import InvalidEmail, QueueUnavailable, send_email

    try:
        result = send_email.delay(
            to=list(to),
            subject=subject,
            text=text,
            html=html,
            from_email=from_email,
            cc=list(cc),
            bcc=list(bcc),
            account=account,
        )
    except (InvalidEmail, SettingsError) as exc:
        fail(str(exc))
    except QueueUnavailable as exc:
        fail(str(exc), EXIT_FAILED)
    click.echo(json.dumps({"job_id": result.id}) if as_json else result.id)


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def status(job_id: str, as_json: bool) -> None:
    """Show what happened to a job."""
    from mailworker.store.status import status as job_status

    current_settings()
    record = job_status(job_id)
    if record is None:
        fail(f"no status for job {job_id} (unknown, or older than its 7-day TTL)", EXIT_FAILED)
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
        return
    table = Table(show_header=False, box=None)
    for key, value in sorted(record.items()):
        table.add_row(key, shown_value(key, value))
    console.print(table)
