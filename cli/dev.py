"""`mailworker devserver` and `mailworker demo`: a local TLS + AUTH server, a demo."""

from __future__ import annotations

import sys
from typing import Any, cast

import click

from mailworker.cli.base import (
    console,
    main,
)


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

    from mailworker.dev.devserver import DevServer, TlsMode

    password = password or secrets.token_urlsafe(12)

    def show(message: Any) -> None:
        console.print(
            f"[green]received[/] from {message.mail_from} to "
            f"{', '.join(message.rcpt_tos)}: {message.message['Subject']!r}"
        )

    server = DevServer(
        tls=cast(TlsMode, tls),
        host=host,
        port=port,
        users={user: password},
        certificate_dir=Path(certs),
        on_message=show,
    ).start()
    console.print("SMTP dev server running. Point mailworker at it with:\n")
    console.print(f"  export SMTP_URL='{server.url()}'", highlight=False)
    console.print(f"  export SMTP_CA_FILE='{server.ca_file}'", highlight=False)
    console.print("  export ALLOW_LOCAL_DOMAINS=true  # root@localhost, *.test\n", highlight=False)
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
