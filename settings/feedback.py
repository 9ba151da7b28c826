"""What comes back after the 250: the bounce mailbox, the rules for bounces and complaints,
and where events go (docs/feedback.md).

``BOUNCE_MAILBOX_URL=imaps://user:pass@imap.example.com:993/INBOX`` names the mailbox DSNs
and ARF reports arrive in: IMAP over implicit TLS only (a password never travels in clear),
certificate verified unless ``tls_verify=off``; ``?auth=xoauth2&token_url=...&client_id=...``
takes OAuth2 tokens as SMTP accounts do (the client secret as the URL password); ``done=``
names the folder read messages move to (``mailworker-done``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, unquote, urlencode

from pydantic import SecretStr

from mailworker.settings.errors import SettingsError
from mailworker.settings.smtp_url import SmtpAccount, _switch, parse_smtp_url
from mailworker.settings.urls import PERCENT_ENCODE, port_of, scheme_of, split_url

BOUNCE_MAILBOX_VARIABLE = "BOUNCE_MAILBOX_URL"
DEFAULT_DONE_FOLDER = "mailworker-done"


@dataclass(frozen=True)
class BounceMailbox:
    """One IMAP mailbox over TLS. Its ``repr`` never shows the password."""

    host: str
    port: int
    username: str
    password: SecretStr | None = field(default=None, repr=False)
    folder: str = "INBOX"
    done_folder: str = DEFAULT_DONE_FOLDER
    tls_verify: bool = True
    # auth=xoauth2: the token comes as for an SMTP account of the same name ("bounces").
    oauth: SmtpAccount | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FeedbackPolicy:
    """What a later bounce or complaint does (feedback.apply)."""

    mailbox: BounceMailbox | None = None
    soft_bounce_limit: int = 3  # soft bounces of one address within the window ...
    soft_bounce_window: float = 14 * 24 * 3600.0
    soft_bounce_suppression: float = 30 * 24 * 3600.0  # ... suppress it from bulk this long
    complaint_rate_alert: float = 0.003  # Gmail's and Yahoo's line, over 24 hours
    bounce_rate_alert: float = 0.05  # hard bounces over 24 hours
    sns_topics: tuple[str, ...] = ()  # SES_SNS_TOPICS: the only topics whose events count
    # RETURN_PATH: MAIL FROM becomes local+<job id>@domain (VERP), where bounces go.
    return_path: str | None = None


@dataclass(frozen=True)
class EventsTarget:
    """Where recipient outcomes go: a Celery task of the app (``EVENTS_TASK``)."""

    task: str | None = None  # e.g. myapp.tasks.on_mail_event; None: no events are kept
    broker_url: str | None = field(default=None, repr=False)  # default: REDIS_URL
    queue: str = "celery"  # Celery's default queue, where the app's worker listens


def parse_bounce_mailbox(url: str) -> BounceMailbox:
    """Parse ``BOUNCE_MAILBOX_URL``; problems raise :class:`SettingsError` naming it."""
    variable = BOUNCE_MAILBOX_VARIABLE
    url = url.strip()
    parts = split_url(variable, url)
    if parts.scheme != "imaps":
        raise SettingsError(
            variable,
            f"unsupported scheme {scheme_of(url)!r}; use imaps://user:pass@host:993/INBOX "
            "(IMAP over TLS: the password never travels in clear)",
        )
    if not parts.hostname or not parts.username:
        raise SettingsError(
            variable, f"the URL needs a user and a host; if it has them, {PERCENT_ENCODE}"
        )
    port = port_of(variable, parts, 993)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    done = options.pop("done", DEFAULT_DONE_FOLDER)
    tls_verify = _switch(variable, options, "tls_verify")
    oauth = None
    if options.get("auth") == "xoauth2":
        # The token source is the SMTP account's: one parser, one set of checks.
        query = urlencode(options)
        userinfo = parts.netloc.rpartition("@")[0]
        oauth = parse_smtp_url(variable, f"smtps://{userinfo}@{parts.hostname}:{port}?{query}")
        oauth = replace(oauth, name="bounces")
    elif set(options) - {"auth"} or options.get("auth", "password") != "password":
        raise SettingsError(
            variable, "known query parameters: done, tls_verify, auth=xoauth2 (with token_url, "
            "client_id, scope)",
        )  # fmt: skip
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    password = unquote(parts.password) if parts.password is not None else None
    return BounceMailbox(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username),
        password=SecretStr(password) if password is not None else None,
        folder=folder,
        done_folder=done,
        tls_verify=tls_verify,
        oauth=oauth,
    )
