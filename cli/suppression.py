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
    fail,
    main,
    when,
)


@main.group()
def suppress() -> None:
    """The suppression list: addresses that get no mail (unsubscribed, bounced, complained)."""


_SCOPE_HELP = "all (every message), bulk (every campaign) or list:<List-Id> (one list)"


@suppress.command("add")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--reason", default="added by an operator", show_default=True)
@click.option("--scope", default="all", show_default=True, help=_SCOPE_HELP)
def suppress_add(addresses: tuple[str, ...], reason: str, scope: str) -> None:
    """Suppress ADDRESSES (for all mail, unless --scope says less)."""
    from mailworker.store.suppression import suppress as suppress_one

    current_settings()
    for address in addresses:
        suppress_one(address, reason, scope=_scope(scope))
    console.print(f"suppressed {len(addresses)} address(es) ({scope})")


@suppress.command("remove")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--scope", default=None, help=f"only this scope: {_SCOPE_HELP}; default: every one")
def suppress_remove(addresses: tuple[str, ...], scope: str | None) -> None:
    """Let ADDRESSES receive mail again."""
    from mailworker.store.suppression import scopes, unsuppress

    current_settings()
    chosen = [_scope(scope)] if scope else scopes()
    removed = sum(unsuppress(list(addresses), one) for one in chosen)
    console.print(f"removed {removed} entr{'y' if removed == 1 else 'ies'}")


@suppress.command("check")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def suppress_check(addresses: tuple[str, ...], as_json: bool) -> None:
    """Say for each address whether, where and why it is suppressed. Exits 1 if it is
    suppressed for all mail."""
    from mailworker.store.suppression import entries, scopes

    current_settings()
    found = {scope: entries(addresses, scope) for scope in scopes()}
    blocked_all = any(found["all"])
    if as_json:
        rows = [
            {
                "address": address,
                "suppressed": found["all"][i] is not None,
                "reason": found["all"][i].describe() if found["all"][i] else None,  # type: ignore[union-attr]
                "entries": [_row(e) for one in found.values() if (e := one[i])],
            }
            for i, address in enumerate(addresses)
        ]
        click.echo(json.dumps(rows, indent=2))
    else:
        for i, address in enumerate(addresses):
            lines = [_line(e) for one in found.values() if (e := one[i])]
            console.print(f"{address}: " + ("; ".join(lines) if lines else "ok"), highlight=False)
    sys.exit(EXIT_FAILED if blocked_all else 0)


@suppress.command("list")
@click.option("--scope", default=None, help=f"{_SCOPE_HELP}; default: every one")
@click.option("--type", "kind", default=None, help="hard-bounce, soft-bounce, complaint, ...")
@click.option("--limit", default=50, show_default=True, help="At most this many rows.")
def suppress_list(scope: str | None, kind: str | None, limit: int) -> None:
    """Show suppression entries: address, scope, type, source, since, expiry, reason."""
    from rich.table import Table

    from mailworker.store.suppression import scopes, suppression_list

    current_settings()
    table = Table("address", "scope", "type", "status", "source", "since", "expires", "reason")
    shown = 0
    for one in [_scope(scope)] if scope else scopes():
        for address, entry in suppression_list(one):
            if (kind and entry.type != kind) or not entry.active():
                continue
            if shown == limit:
                break
            table.add_row(address, entry.scope, entry.type, entry.status, entry.source,
                          when(entry.at) if entry.at else "", when(entry.expires_at)
                          if entry.expires_at else "never", entry.reason[:60])  # fmt: skip
            shown += 1
    console.print(table)


@suppress.command("import")
@click.argument("csv_file", type=click.File("r", encoding="utf-8"))
@click.option("--reason", default="imported", show_default=True)
def suppress_import(csv_file: Any, reason: str) -> None:
    """Suppress every address of CSV_FILE (an 'email' column, or one address per line)."""
    from mailworker.store.suppression import suppress_many

    current_settings()
    count = suppress_many(
        ((address, reason) for address in _addresses_in(csv_file)), source="import"
    )
    console.print(f"suppressed {count} address(es)")


@suppress.command("export")
@click.argument("csv_file", type=click.File("w", encoding="utf-8"), default="-")
def suppress_export(csv_file: Any) -> None:
    """Write every entry as CSV to CSV_FILE or standard output (email, reason first)."""
    from mailworker.store.suppression import scopes, suppression_list

    current_settings()
    writer = csv.writer(csv_file)
    writer.writerow(["email", "reason", "scope", "type", "source", "status", "at", "expires_at"])
    for scope in scopes():
        for address, entry in suppression_list(scope):
            writer.writerow([address, entry.reason, scope, entry.type, entry.source,
                             entry.status, entry.at, entry.expires_at or ""])  # fmt: skip


def _scope(scope: str) -> str:
    from mailworker.store.suppression import scope_key

    try:
        scope_key(scope)
    except ValueError as exc:
        fail(str(exc))
    return scope


def _row(entry: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(entry)


def _line(entry: Any) -> str:
    expiry = f", until {when(entry.expires_at)}" if entry.expires_at else ""
    return f"suppressed ({entry.describe()}{expiry})"


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
