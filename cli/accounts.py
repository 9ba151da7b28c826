"""Accounts: `check`, `doctor`, `limits`, `stats` and `resume`."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict
from typing import Any

import click
from rich.table import Table

from mailworker.cli.base import (
    EXIT_FAILED,
    console,
    current_settings,
    fail,
    main,
    when,
)
from mailworker.settings import SettingsError


@main.command()
@click.argument("accounts", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def check(accounts: tuple[str, ...], as_json: bool) -> None:
    """Connect to each account (TLS, AUTH, QUIT) and say what was found.

    With no ACCOUNTS, checks every configured account. Exits 1 if any check fails.
    """
    from mailworker.cli.check import check_account

    settings = current_settings()
    names = list(accounts) or sorted(settings.accounts)
    if not names:
        fail("no SMTP account configured: set SMTP_URL (e.g. smtp+starttls://user:pass@host:587)")
    failed = False
    reports = []
    for name in names:
        try:
            account = settings.account(name)
        except SettingsError as exc:
            fail(str(exc))
        report = asyncio.run(check_account(account, settings))
        failed |= not report.ok
        reports.append(asdict(report))
        if as_json:
            continue
        mark = "[green]ok[/]" if report.ok else "[red]FAILED[/]"
        console.print(f"[bold]{name}[/] ({account.address}, {account.security}): {mark}")
        rows = [
            ("TLS", report.tls_version),
            ("certificate", report.certificate_subject),
            ("expires", report.certificate_expires),
            ("AUTH offered", " ".join(report.auth_mechanisms) or None),
            ("authenticated as", report.authenticated_as),
            ("error", report.error),
            ("what to do", report.advice),
            ("WARNING", report.warning),
        ]
        for label, value in rows:
            if value:
                console.print(f"  {label:>17}: {value}", highlight=False)
    if as_json:
        click.echo(json.dumps(reports, indent=2))
    sys.exit(EXIT_FAILED if failed else 0)


@main.command()
@click.option("--offline", is_flag=True, help="Skip the DNS lookups.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def doctor(offline: bool, as_json: bool) -> None:
    """Run every check: Redis, each SMTP account (TLS, AUTH), campaign settings, and the
    SPF / DMARC records of the From domain. Exits 1 if anything is broken."""

    from mailworker.cli.doctor import run_doctor

    findings = run_doctor(current_settings(), online=not offline)
    if as_json:
        click.echo(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        marks = {True: "[green]ok[/]", False: "[red]FAILED[/]", None: "[yellow]note[/]"}
        for finding in findings:
            console.print(f"{marks[finding.ok]:>18}  [bold]{finding.check}[/]: ", end="")
            console.print(finding.detail, highlight=False)
            if finding.advice and finding.ok is not True:
                console.print(f"{'':>8}  what to do: {finding.advice}", highlight=False)
    sys.exit(EXIT_FAILED if any(f.ok is False for f in findings) else 0)


@main.command()
@click.argument("account")
def resume(account: str) -> None:
    """Lift the pause of an account (after fixing its password or quota)."""
    from mailworker.store.pauses import resume_account

    current_settings()
    lifted, released = resume_account(account)
    state = "resumed" if lifted else "was not paused"
    console.print(f"account {account!r} {state}; {released} held job(s) are due now")


@main.command()
@click.argument("accounts", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def limits(accounts: tuple[str, ...], as_json: bool) -> None:
    """Show each account's configured limits and how much of them is in use right now.

    Limits are set on the account URL, e.g. SMTP_URL=...?rate=14/s,50000/d&cluster_connections=3
    (see docs/limits.md).
    """
    from mailworker.delivery.ratelimit import usage
    from mailworker.delivery.slots import slots_in_use
    from mailworker.store.pauses import paused_until

    settings = current_settings()
    names = list(accounts) or sorted(settings.accounts)
    report: list[dict[str, Any]] = []
    for name in names:
        try:
            account = settings.account(name)
        except SettingsError as exc:
            fail(str(exc))
        factor, windows = usage(account, settings.limiter.throttle_cooldown)
        cap = account.limits.cluster_connections
        held, waiting = slots_in_use(name) if cap is not None else (None, None)
        pause = paused_until(name)
        report.append(
            {
                "account": name,
                "rate_factor": factor,
                "windows": [vars(w) for w in windows],
                "connections": {"cap": cap, "held": held, "waiting": waiting},
                "paused_until": pause[0] if pause else None,
            }
        )
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    table = Table("account", "limit", "in use", "note")
    for entry, name in zip(report, names, strict=True):
        rows = [
            (
                w["label"],
                f"{w['used']} / {w['effective_limit']}",
                "throttled" if w["effective_limit"] < w["limit"] else "",
            )
            for w in entry["windows"]
        ]
        connections = entry["connections"]
        if connections["cap"] is not None:
            rows.append(
                (
                    f"{connections['cap']} connections",
                    f"{connections['held']} / {connections['cap']}",
                    f"{connections['waiting']} waiting" if connections["waiting"] else "",
                )
            )
        if entry["paused_until"]:
            rows.append(("paused", "", "until " + when(entry["paused_until"])))
        for i, (label, used, note) in enumerate(rows or [("no limits", "", "")]):
            table.add_row(name if i == 0 else "", label, used, note)
    console.print(table)


@main.command()
@click.option(
    "--queue", "queues", multiple=True, default=["email", "email.high", "bulk"], show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def stats(queues: tuple[str, ...], as_json: bool) -> None:
    """Messages per account and outcome (all workers, all time), and what is waiting.

    sent counts messages; bounced, failed and suppressed count recipients; deferred counts
    attempts that were put off; dead counts dead-lettered jobs. Per-process pool gauges and
    latency histograms are on each worker's Prometheus endpoint (METRICS_PORT).
    """
    from mailworker.store.feedback import rates
    from mailworker.store.stats import OUTCOMES, overview

    settings = current_settings()
    report = overview(sorted(settings.accounts), list(queues))
    report["last_24h"] = rates(sorted(settings.accounts))
    waiting = report["queued"]
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    # One column per account: accounts are few, outcomes many (a narrow terminal fits it).
    accounts = report["accounts"]
    table = Table("outcome", *accounts)
    for outcome in OUTCOMES:
        table.add_row(outcome, *(str(counts[outcome]) for counts in accounts.values()))
    console.print(table)
    counted = ("sent", "bounced", "hard", "complained")
    title = "last 24 hours, after the 250 (DSNs, complaints, provider events)"
    recent = Table("account", *counted, "bounce rate", "complaint rate", title=title)
    for account, r in report["last_24h"].items():
        rates_shown = (f"{r['bounce_rate']:.2%}", f"{r['complaint_rate']:.2%}")
        recent.add_row(account, *(str(int(r[k])) for k in counted), *rates_shown)
    console.print(recent)
    queued = ", ".join(f"{queue} {count}" for queue, count in waiting.items())
    console.print(
        f"queued: {queued}; waiting in Redis (scheduled, retries, pauses, quotas): "
        f"{report['deferred']}; dead letters: {report['dead']}",
        highlight=False,
    )
