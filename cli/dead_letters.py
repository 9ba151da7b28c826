"""`mailworker dead list|show|retry|purge`: the dead-letter queue."""

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
)


@main.group()
def dead() -> None:
    """Inspect and retry dead-lettered jobs (permanent failures, retries exhausted)."""


@dead.command("list")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def dead_list(limit: int, as_json: bool) -> None:
    """The most recent dead letters, newest first."""
    from mailworker.store import dead as letters

    current_settings()
    records = letters.list_dead(limit)
    if as_json:
        click.echo(
            json.dumps([{k: v for k, v in r.items() if k != "payload"} for r in records], indent=2)
        )
        return
    table = Table("job id", "account", "attempts", "reason")
    for record in records:
        table.add_row(record["job_id"], record["account"], record["attempts"], record["reason"])
    console.print(table)
    console.print(f"{letters.count()} dead letter(s). Retry with: mailworker dead retry ID")


@dead.command("show")
@click.argument("job_id")
def dead_show(job_id: str) -> None:
    """Everything kept about one dead job (its reason, last reply, the job itself)."""
    from mailworker.store import dead as letters

    current_settings()
    record = letters.show(job_id)
    if record is None:
        fail(f"no dead letter {job_id}; list them with: mailworker dead list", EXIT_FAILED)
    click.echo(json.dumps(record, indent=2, sort_keys=True))


@dead.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead letter.")
def dead_retry(job_ids: tuple[str, ...], retry_all: bool) -> None:
    """Queue dead jobs again with a fresh retry budget."""
    from mailworker.store import dead as letters
    from mailworker.store.job import UndecodableJob
    from mailworker.tasks.dead_letters import resurrect

    current_settings()
    if not job_ids and not retry_all:
        fail("give job ids or --all")
    ids = letters.all_ids() if retry_all else list(job_ids)
    missing, foreign = [], []
    for job_id in ids:
        try:
            if not resurrect(job_id):
                missing.append(job_id)
        except UndecodableJob:  # a foreign message: there is nothing to send again
            foreign.append(job_id)
    console.print(f"queued {len(ids) - len(missing) - len(foreign)} job(s) again")
    if foreign:
        console.print(f"not jobs, kept as dead letters: {', '.join(foreign)}", highlight=False)
    if missing:
        fail(f"no dead letter for: {', '.join(missing)}", EXIT_FAILED)


@dead.command("purge")
@click.option(
    "--older-than",
    "older_than",
    metavar="AGE",
    help="Only those dead longer than AGE: seconds, or 90m, 12h, 7d.",
)
@click.confirmation_option(prompt="Delete these dead letters for good?")
def dead_purge(older_than: str | None) -> None:
    """Delete dead letters (they expire by themselves after DEAD_LETTER_RETENTION)."""
    from mailworker.store import dead as letters

    current_settings()
    seconds = None if older_than is None else _duration(older_than)
    console.print(f"deleted {letters.purge(older_than=seconds)} dead letter(s)")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """``3600``, ``90m``, ``12h`` or ``7d`` in seconds; a usage error otherwise."""
    value, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        seconds = float(value) * _UNITS[unit]
    except ValueError:
        fail(f"--older-than {text!r}: give seconds or a number with s, m, h or d (e.g. 7d)")
    if seconds < 0:
        fail(f"--older-than {text!r}: give a positive age")
    return seconds
