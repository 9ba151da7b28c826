"""`mailworker suppress add|remove|check|import|export`: the suppression list."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from typing import Any

import click

from mailworker.cli.base import (
    EXIT_FAILED,
    console,
    current_settings,
    main,
)


@main.group()
def suppress() -> None:
    """The suppression list: addresses that get no mail (unsubscribed, bounced, complained)."""


@suppress.command("add")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--reason", default="added by an operator", show_default=True)
def suppress_add(addresses: tuple[str, ...], reason: str) -> None:
    """Suppress ADDRESSES."""
    from mailworker.store.suppression import suppress_many

    current_settings()
    suppress_many((address, reason) for address in addresses)
    console.print(f"suppressed {len(addresses)} address(es)")


@suppress.command("remove")
@click.argument("addresses", nargs=-1, required=True)
def suppress_remove(addresses: tuple[str, ...]) -> None:
    """Let ADDRESSES receive mail again."""
    from mailworker.store.suppression import unsuppress

    current_settings()
    console.print(f"removed {unsuppress(list(addresses))} address(es)")


@suppress.command("check")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def suppress_check(addresses: tuple[str, ...], as_json: bool) -> None:
    """Say for each address whether it is suppressed, and why. Exits 1 if any is."""
    from mailworker.store.suppression import reasons as suppression_reasons

    current_settings()
    reasons = suppression_reasons(addresses)
    if as_json:
        found = [
            {"address": a, "suppressed": bool(r), "reason": r}
            for a, r in zip(addresses, reasons, strict=True)
        ]
        click.echo(json.dumps(found, indent=2))
    for address, reason in zip(addresses, reasons, strict=True):
        if not as_json:
            console.print(f"{address}: " + (f"suppressed ({reason})" if reason else "ok"))
    sys.exit(EXIT_FAILED if any(reasons) else 0)


@suppress.command("import")
@click.argument("csv_file", type=click.File("r", encoding="utf-8"))
@click.option("--reason", default="imported", show_default=True)
def suppress_import(csv_file: Any, reason: str) -> None:
    """Suppress every address of CSV_FILE (an 'email' column, or one address per line)."""
    from mailworker.store.suppression import suppress_many

    current_settings()
    count = suppress_many((address, reason) for address in _addresses_in(csv_file))
    console.print(f"suppressed {count} address(es)")


@suppress.command("export")
@click.argument("csv_file", type=click.File("w", encoding="utf-8"), default="-")
def suppress_export(csv_file: Any) -> None:
    """Write the suppression list as CSV (email,reason) to CSV_FILE or standard output."""
    from mailworker.store.suppression import suppression_list

    current_settings()
    writer = csv.writer(csv_file)
    writer.writerow(["email", "reason"])
    for address, reason in suppression_list():
        writer.writerow([address, reason])


def _addresses_in(csv_file: Any) -> Iterator[str]:
    """The addresses of a CSV file: its 'email' column, or the first one without a header."""
    first = csv_file.readline()
    header = [column.strip().lower() for column in first.split(",")]
    column = header.index("email") if "email" in header else 0
    if "email" not in header and first.strip():
        yield first.strip()
    for row in csv.reader(csv_file):
        if len(row) > column and "@" in row[column]:
            yield row[column]
