"""`mailworker bounces watch|check`: the bounce mailbox reader (the Procfile's ``bounces``)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from mailworker.cli.base import EXIT_FAILED, console, current_settings, fail, main


@main.group()
def bounces() -> None:
    """Read bounces (DSN) and complaints (ARF) from BOUNCE_MAILBOX_URL and apply them."""


@bounces.command("watch")
@click.option("--interval", default=10.0, show_default=True, help="Seconds between reads.")
def bounces_watch(interval: float) -> None:
    """Read the mailbox every INTERVAL seconds until stopped (SIGTERM or Ctrl-C)."""
    from mailworker.feedback.mailbox import MailboxError, watch
    from mailworker.observe.logs import configure_logging
    from mailworker.observe.sentry import init_sentry

    settings = current_settings()
    if settings.feedback.mailbox is None:
        fail("BOUNCE_MAILBOX_URL is not set: imaps://user:pass@imap.example.com/INBOX")
    configure_logging(settings)
    init_sentry(settings)  # rate alerts and the reader's own errors
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        watch(interval=interval, stop=stop, settings=settings,
              on_pass=lambda summary: _report(summary) if summary.messages else None)  # fmt: skip
    except MailboxError as exc:
        fail(str(exc), EXIT_FAILED)


@bounces.command("check")
def bounces_check() -> None:
    """Read the mailbox once, apply what is there, and say what it held."""
    from mailworker.feedback.mailbox import MailboxError, connect, read_once
    from mailworker.observe.sentry import init_sentry

    settings = current_settings()
    mailbox = settings.feedback.mailbox
    if mailbox is None:
        fail("BOUNCE_MAILBOX_URL is not set: imaps://user:pass@imap.example.com/INBOX")
    init_sentry(settings)  # rate alerts
    try:
        imap = connect(mailbox, settings)
    except MailboxError as exc:
        fail(str(exc), EXIT_FAILED)
    try:
        _report(read_once(imap, mailbox, settings=settings))
    finally:
        imap.logout()


def _report(summary: Any) -> None:
    if summary.messages:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(summary.kinds.items()))
        effects = ", ".join(f"{n} {e}" for e, n in sorted(summary.effects.items()))
        console.print(f"read {summary.messages} message(s): {kinds}; recipients: {effects}")
    else:
        console.print("no new messages")
