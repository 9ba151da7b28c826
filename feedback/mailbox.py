"""The bounce mailbox reader: DSNs and complaints arriving by mail, each read and applied once.

    mailworker bounces watch      (the Procfile's ``bounces`` process)

One process reads the mailbox of ``BOUNCE_MAILBOX_URL`` over IMAP with TLS: for each message
in the folder it fetches the whole message without marking it read (``BODY.PEEK[]``), reads
the report (:mod:`mailworker.feedback.reports`), applies it (:mod:`mailworker.feedback.apply`,
idempotent) and only then moves it to the done folder (UID MOVE, RFC 6851; or COPY, then
``\\Deleted`` and UID EXPUNGE where MOVE is missing). A reader killed at any point leaves
each message either not yet applied (it is read next time) or applied and still in the
folder (applied again next time, which repeats nothing). A lock in Redis keeps a second
reader (two dynos by mistake) waiting rather than racing the first.

A Procfile process, not a Celery beat task: the reader holds one IMAP session, polls every
few seconds without a scheduler of its own, and takes no worker thread from delivery.
"""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailworker.delivery.crashpoint import crash_point
from mailworker.delivery.tls import client_tls_context
from mailworker.feedback.apply import apply_report
from mailworker.feedback.reports import read_report
from mailworker.settings import Settings, get_settings
from mailworker.settings.feedback import BounceMailbox
from mailworker.store import keys
from mailworker.store.client import get_redis

log = logging.getLogger("mailworker.bounces")

READER_LOCK = keys.BOUNCE_READER_LOCK
_FETCH_CHUNK = 50


class MailboxError(Exception):
    """The mailbox could not be read (connection, TLS, login, folder): says what to check."""


@dataclass
class ReadSummary:
    """What one pass over the mailbox did."""

    messages: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # bounce, complaint, auto-reply, ...
    effects: Counter[str] = field(default_factory=Counter)  # new, repeat, unmatched, ignored


def connect(mailbox: BounceMailbox, settings: Settings) -> IMAPClient:
    """A logged-in IMAP session over verified TLS (the one place IMAP errors are translated)."""
    context = client_tls_context(settings.smtp_ca_file)
    if not mailbox.tls_verify:
        log.warning("BOUNCE_MAILBOX_URL: TLS certificate and host name NOT verified "
                    "(tls_verify=off)")  # fmt: skip
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        imap = IMAPClient(mailbox.host, port=mailbox.port, ssl=True, ssl_context=context,
                          timeout=settings.smtp_timeout)  # fmt: skip
    except (OSError, IMAPClientError) as exc:
        raise MailboxError(f"cannot reach {mailbox.host}:{mailbox.port} over TLS: "
                           f"{type(exc).__name__}: {exc}") from None  # fmt: skip
    try:
        if mailbox.oauth is not None:
            imap.oauth2_login(mailbox.username, _token(mailbox))
        else:
            secret = mailbox.password.get_secret_value() if mailbox.password else ""
            imap.login(mailbox.username, secret)
        imap.select_folder(mailbox.folder)
        if not imap.folder_exists(mailbox.done_folder):
            imap.create_folder(mailbox.done_folder)
    except (OSError, IMAPClientError) as exc:
        imap.shutdown()
        # IMAP servers do not echo passwords; the text is theirs ("Authentication failed").
        raise MailboxError(f"{mailbox.username}@{mailbox.host}: {exc}; check the user, "
                           f"password and folder {mailbox.folder!r}") from None  # fmt: skip
    return imap


def read_once(
    imap: IMAPClient,
    mailbox: BounceMailbox,
    *,
    settings: Settings | None = None,
    client: redis.Redis | None = None,
) -> ReadSummary:
    """Read, apply and move every message now in the folder."""
    settings, summary = settings or get_settings(), ReadSummary()
    uids = sorted(imap.search("ALL"))
    move = imap.has_capability("MOVE")
    for start in range(0, len(uids), _FETCH_CHUNK):
        chunk = uids[start : start + _FETCH_CHUNK]
        for uid, data in imap.fetch(chunk, ["BODY.PEEK[]"]).items():
            raw = data.get(b"BODY[]")
            if raw is None:
                continue  # expunged by someone else meanwhile
            crash_point("report-read")
            report = read_report(raw, settings.feedback.return_path)
            source = {"bounce": "dsn", "complaint": "arf"}.get(report.kind, report.kind)
            applied = apply_report(report, source, settings=settings, client=client)
            summary.messages += 1
            summary.kinds[report.kind] += 1
            summary.effects.update(a.effect for a in applied)
            crash_point("report-applied")
            _move(imap, uid, mailbox.done_folder, move)
    return summary


def watch(
    *,
    interval: float = 10.0,
    stop: threading.Event | None = None,
    settings: Settings | None = None,
    on_pass: Callable[[ReadSummary], None] | None = None,
) -> None:
    """Read the mailbox every ``interval`` seconds until ``stop``; reconnects after errors."""
    settings, stop = settings or get_settings(), stop or threading.Event()
    mailbox = settings.feedback.mailbox
    if mailbox is None:
        raise MailboxError("BOUNCE_MAILBOX_URL is not set: imaps://user:pass@host/INBOX")
    client, owner = get_redis(), uuid.uuid4().hex
    imap: IMAPClient | None = None
    while not stop.is_set():
        if not _hold_lock(client, owner, interval):
            stop.wait(interval)  # another reader has the mailbox
            continue
        try:
            imap = imap or connect(mailbox, settings)
            summary = read_once(imap, mailbox, settings=settings, client=client)
            if on_pass is not None:
                on_pass(summary)
            imap.noop()
        except (MailboxError, OSError, IMAPClientError) as exc:
            log.error("bounce mailbox: %s; trying again in %.0f s", exc, interval)
            _drop(imap)
            imap = None
        stop.wait(interval)
    _drop(imap)
    if client.get(READER_LOCK) == owner:
        client.delete(READER_LOCK)


def _move(imap: IMAPClient, uid: int, folder: str, move: bool) -> None:
    if move:
        imap.move([uid], folder)
        return
    imap.copy([uid], folder)
    imap.add_flags([uid], [b"\\Deleted"])
    if imap.has_capability("UIDPLUS"):
        imap.uid_expunge([uid])
    else:
        imap.expunge()


def _hold_lock(client: redis.Redis, owner: str, interval: float) -> bool:
    ttl = max(30, int(interval * 3))
    if client.set(READER_LOCK, owner, nx=True, ex=ttl):
        return True
    if client.get(READER_LOCK) == owner:
        client.expire(READER_LOCK, ttl)
        return True
    return False


def _drop(imap: IMAPClient | None) -> None:
    if imap is not None:
        try:
            imap.logout()
        except Exception:  # noqa: BLE001 - a broken session is being thrown away
            pass


def _token(mailbox: BounceMailbox) -> str:
    import asyncio

    from mailworker.delivery.oauth import token_getter_for

    assert mailbox.oauth is not None
    getter = token_getter_for(mailbox.oauth)
    if getter is None:
        raise MailboxError("auth=xoauth2 needs token_url and client_id, or a registered provider")
    return asyncio.run(getter(False))
