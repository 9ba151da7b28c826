"""The ``mailworker`` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from mailworker.settings import SettingsError, get_settings

console = Console()
errors = Console(stderr=True)

# Exit codes mean something to scripts: 1 = the thing checked is broken, 2 = usage or config.
EXIT_FAILED = 1
EXIT_CONFIG = 2


def _fail(message: str, code: int = EXIT_CONFIG) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)


class _Group(click.Group):
    """Turns "Redis is not there" into one line of advice instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        import redis

        try:
            return super().invoke(ctx)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            _fail(
                f"Redis at REDIS_URL did not answer ({exc}); check that it is running and "
                "that REDIS_URL points at it",
                EXIT_FAILED,
            )


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """mailworker: queue email in Redis, deliver it with Celery over pooled TLS SMTP.

    Configuration comes from the environment (REDIS_URL, SMTP_URL, SMTP_URL_<NAME>, ...);
    see the README. Start a worker with:  celery -A mailworker.worker worker -Q email
    """


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
        _fail(str(exc))
    except QueueUnavailable as exc:
        _fail(str(exc), EXIT_FAILED)
    click.echo(json.dumps({"job_id": result.id}) if as_json else result.id)


@main.command()
@click.argument("accounts", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def check(accounts: tuple[str, ...], as_json: bool) -> None:
    """Connect to each account (TLS, AUTH, QUIT) and say what was found.

    With no ACCOUNTS, checks every configured account. Exits 1 if any check fails.
    """
    from mailworker.cli.check import check_account

    settings = _settings()
    names = list(accounts) or sorted(settings.accounts)
    if not names:
        _fail("no SMTP account configured: set SMTP_URL (e.g. smtp+starttls://user:pass@host:587)")
    failed = False
    reports = []
    for name in names:
        try:
            account = settings.account(name)
        except SettingsError as exc:
            _fail(str(exc))
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

    findings = run_doctor(_settings(), online=not offline)
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
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def status(job_id: str, as_json: bool) -> None:
    """Show what happened to a job."""
    from mailworker.store.status import status as job_status

    _settings()
    record = job_status(job_id)
    if record is None:
        _fail(f"no status for job {job_id} (unknown, or older than its 7-day TTL)", EXIT_FAILED)
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
        return
    table = Table(show_header=False, box=None)
    for key, value in sorted(record.items()):
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    console.print(table)


@main.group()
def dead() -> None:
    """Inspect and retry dead-lettered jobs (permanent failures, retries exhausted)."""


@dead.command("list")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def dead_list(limit: int, as_json: bool) -> None:
    """The most recent dead letters, newest first."""
    from mailworker.store import dead as letters

    _settings()
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

    _settings()
    record = letters.show(job_id)
    if record is None:
        _fail(f"no dead letter {job_id}; list them with: mailworker dead list", EXIT_FAILED)
    click.echo(json.dumps(record, indent=2, sort_keys=True))


@dead.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead letter.")
def dead_retry(job_ids: tuple[str, ...], retry_all: bool) -> None:
    """Queue dead jobs again with a fresh retry budget."""
    from mailworker.store import dead as letters
    from mailworker.store.job import UndecodableJob
    from mailworker.tasks.dead_letters import resurrect

    _settings()
    if not job_ids and not retry_all:
        _fail("give job ids or --all")
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
        _fail(f"no dead letter for: {', '.join(missing)}", EXIT_FAILED)


@dead.command("purge")
@click.confirmation_option(prompt="Delete every dead letter for good?")
def dead_purge() -> None:
    """Delete every dead letter."""
    from mailworker.store import dead as letters

    _settings()
    console.print(f"deleted {letters.purge()} dead letter(s)")


@main.command()
@click.argument("account")
def resume(account: str) -> None:
    """Lift the pause of an account (after fixing its password or quota)."""
    from mailworker.store.pauses import resume_account

    _settings()
    lifted, released = resume_account(account)
    state = "resumed" if lifted else "was not paused"
    console.print(f"account {account!r} {state}; {released} held job(s) are due now")


@main.command()
@click.argument("accounts", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def limits(accounts: tuple[str, ...], as_json: bool) -> None:
    """Show each account's configured limits and how much of them is in use right now.

    Limits are set on the account URL, e.g. SMTP_URL=...?rate=14/s,50000/d&cluster_connections=3
    (see the README, "Rate limits").
    """
    from mailworker.delivery.ratelimit import usage
    from mailworker.delivery.slots import slots_in_use
    from mailworker.store.pauses import paused_until

    settings = _settings()
    names = list(accounts) or sorted(settings.accounts)
    report = []
    for name in names:
        try:
            account = settings.account(name)
        except SettingsError as exc:
            _fail(str(exc))
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
            rows.append(("paused", "", "until " + _when(entry["paused_until"])))
        for i, (label, used, note) in enumerate(rows or [("no limits", "", "")]):
            table.add_row(name if i == 0 else "", label, used, note)
    console.print(table)


@main.command()
@click.option("--queue", "queues", multiple=True, default=["email"], show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def stats(queues: tuple[str, ...], as_json: bool) -> None:
    """Messages per account and outcome (all workers, all time), and what is waiting.

    sent counts messages; bounced and suppressed count recipients; deferred counts
    attempts that were put off; dead counts dead-lettered jobs. Per-process pool gauges and
    latency histograms are on each worker's Prometheus endpoint (METRICS_PORT).
    """
    from mailworker.store import dead as letters
    from mailworker.store.client import get_redis
    from mailworker.store.deferred import DUE
    from mailworker.tasks.app import queue_key
    from mailworker.worker.metrics import OUTCOMES, cluster_counts

    settings = _settings()
    client = get_redis()
    waiting = {queue: int(client.llen(queue_key(queue))) for queue in queues}
    report = {
        "accounts": cluster_counts(sorted(settings.accounts), client),
        "queued": waiting,
        "deferred": int(client.zcard(DUE)),
        "dead": letters.count(),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    table = Table("account", *OUTCOMES)
    for account, counts in report["accounts"].items():
        table.add_row(account, *(str(counts[o]) for o in OUTCOMES))
    console.print(table)
    queued = ", ".join(f"{queue} {count}" for queue, count in waiting.items())
    console.print(
        f"queued: {queued}; deferred (retries, pauses, quotas and watchdog copies): "
        f"{report['deferred']}; dead letters: {report['dead']}",
        highlight=False,
    )


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

    _settings()
    if not text_file and not html_file:
        _fail("give --text FILE, --html FILE or both")
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
            _fail(f"{exc}; nothing was queued" if isinstance(exc, CampaignError) else str(exc))
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

    _settings()
    record = campaign_status(campaign_id)
    if record is None:
        _fail(f"no campaign {campaign_id}", EXIT_FAILED)
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
        table.add_row(key, str(value))
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

    _settings()
    try:
        getattr(campaigns, action)(campaign_id)
    except KeyError:
        _fail(f"no campaign {campaign_id}", EXIT_FAILED)
    if as_json:
        click.echo(json.dumps({"campaign_id": campaign_id, "action": action, "ok": True}))
    else:
        console.print(f"campaign {campaign_id}: {action} done")


@main.group()
def suppress() -> None:
    """The suppression list: addresses that get no mail (unsubscribed, bounced, complained)."""


@suppress.command("add")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--reason", default="added by an operator", show_default=True)
def suppress_add(addresses: tuple[str, ...], reason: str) -> None:
    """Suppress ADDRESSES."""
    from mailworker.store.ledger import suppress as add

    _settings()
    for address in addresses:
        add(address, reason)
    console.print(f"suppressed {len(addresses)} address(es)")


@suppress.command("remove")
@click.argument("addresses", nargs=-1, required=True)
def suppress_remove(addresses: tuple[str, ...]) -> None:
    """Let ADDRESSES receive mail again."""
    from mailworker.store.ledger import unsuppress

    _settings()
    console.print(f"removed {unsuppress(list(addresses))} address(es)")


@suppress.command("check")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def suppress_check(addresses: tuple[str, ...], as_json: bool) -> None:
    """Say for each address whether it is suppressed, and why. Exits 1 if any is."""
    from mailworker.store.addresses import normalize_address
    from mailworker.store.client import get_redis
    from mailworker.store.ledger import SUPPRESSED

    _settings()
    reasons = get_redis().hmget(SUPPRESSED, [normalize_address(a) for a in addresses])
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
    import csv

    from mailworker.store.addresses import normalize_address
    from mailworker.store.client import get_redis
    from mailworker.store.ledger import SUPPRESSED

    _settings()
    first = csv_file.readline()
    has_header = "email" in [c.strip().lower() for c in first.split(",")]
    rows = csv.reader(csv_file)
    column = [c.strip().lower() for c in first.split(",")].index("email") if has_header else 0
    pipe, count = get_redis().pipeline(transaction=False), 0
    if not has_header and first.strip():
        pipe.hset(SUPPRESSED, normalize_address(first), reason)
        count += 1
    for row in rows:
        if len(row) > column and "@" in row[column]:
            pipe.hset(SUPPRESSED, normalize_address(row[column]), reason)
            count += 1
            if count % 1000 == 0:
                pipe.execute()
    pipe.execute()
    console.print(f"suppressed {count} address(es)")


@suppress.command("export")
@click.argument("csv_file", type=click.File("w", encoding="utf-8"), default="-")
def suppress_export(csv_file: Any) -> None:
    """Write the suppression list as CSV (email,reason) to CSV_FILE or standard output."""
    import csv

    from mailworker.store.ledger import suppression_list

    _settings()
    writer = csv.writer(csv_file)
    writer.writerow(["email", "reason"])
    for address, reason in suppression_list():
        writer.writerow([address, reason])


def _when(timestamp: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(timestamp).isoformat(timespec="seconds")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8587, show_default=True, type=int)
@click.option(
    "--tls", type=click.Choice(["starttls", "implicit"]), default="starttls", show_default=True
)
@click.option("--user", default="dev@example.com", show_default=True)
@click.option("--password", help="Default: a random one, printed at start.")
@click.option(
    "--certs",
    default=".mailworker-dev",
    show_default=True,
    help="Where to write the throwaway CA certificate.",
)
def devserver(host: str, port: int, tls: str, user: str, password: str | None, certs: str) -> None:
    """Run a local SMTP server that requires TLS and AUTH, and print what it receives."""
    import secrets
    import threading
    from pathlib import Path

    from mailworker.dev.devserver import DevServer

    password = password or secrets.token_urlsafe(12)

    def show(message: Any) -> None:
        console.print(
            f"[green]received[/] from {message.mail_from} to "
            f"{', '.join(message.rcpt_tos)}: {message.message['Subject']!r}"
        )

    server = DevServer(
        tls=tls,
        host=host,
        port=port,
        users={user: password},  # type: ignore[arg-type]
        certificate_dir=Path(certs),
        on_message=show,
    ).start()
    console.print("SMTP dev server running. Point mailworker at it with:\n")
    console.print(f"  export SMTP_URL='{server.url()}'", highlight=False)
    console.print(f"  export SMTP_CA_FILE='{server.ca_file}'\n", highlight=False)
    console.print("Press Ctrl-C to stop.")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@main.command()
@click.option("--count", default=5, show_default=True, help="How many messages to send.")
def demo(count: int) -> None:
    """Start a dev SMTP server and a worker, send real mail through Redis, show what arrived."""
    from mailworker.dev.demo import run_demo

    sys.exit(run_demo(console, count))


def _settings() -> Any:
    try:
        return get_settings()
    except SettingsError as exc:
        _fail(str(exc))
