"""The whole configuration, read once from the environment into one frozen object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from redis.connection import parse_url

from mailworker.settings.dkim import DkimKey, dkim_keys
from mailworker.settings.errors import SettingsError
from mailworker.settings.feedback import EventsTarget, FeedbackPolicy, parse_bounce_mailbox
from mailworker.settings.mailboxes import AddressError, parse_mailbox
from mailworker.settings.redis_url import sentinel_parts
from mailworker.settings.smtp_url import SmtpAccount, parse_smtp_url
from mailworker.settings.urls import port_of, split_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024


class _Environment(BaseModel):
    """Scalar variables; pydantic does the typing, we turn its errors into SettingsError.

    A plain model fed from one mapping (not BaseSettings, which would also read
    ``os.environ`` behind our back and make :func:`load_settings` impure).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    REDIS_URL: str = DEFAULT_REDIS_URL
    REDIS_SSL_CERT_REQS: Literal["required", "none"] = "required"
    SMTP_CA_FILE: Path | None = None
    SMTP_TIMEOUT: float = Field(default=30.0, gt=0)
    DEFAULT_FROM_EMAIL: str | None = None
    ALLOW_LOCAL_DOMAINS: bool = False
    SENTRY_DSN: str | None = None
    MAX_MESSAGE_BYTES: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, gt=0)
    REDIS_TIMEOUT: float = Field(default=5.0, gt=0)
    REDIS_VISIBILITY_TIMEOUT: int = Field(default=240, ge=10)
    JOB_LEASE_SECONDS: float = Field(default=30.0, ge=3)
    LOST_MESSAGE_AFTER_SECONDS: float = Field(default=60.0, ge=5)
    RETRY_BASE_DELAY: float = Field(default=30.0, gt=0)
    RETRY_MAX_DELAY: float = Field(default=3600.0, gt=0)
    RETRY_MAX_ATTEMPTS: int = Field(default=10, ge=1)
    RETRY_MAX_AGE: float = Field(default=2 * 24 * 3600.0, gt=0)
    ACCOUNT_PAUSE_SECONDS: float = Field(default=300.0, gt=0)
    FAILOVER_AFTER_SECONDS: float = Field(default=60.0, ge=0)
    RATE_LIMIT_MAX_SLEEP: float = Field(default=5.0, ge=0)
    THROTTLE_COOLDOWN_SECONDS: float = Field(default=60.0, gt=0)
    CONNECTION_LEASE_SECONDS: float = Field(default=15.0, ge=1)
    SENTRY_FAILING_AFTER_SECONDS: float = Field(default=900.0, gt=0)
    DEAD_LETTER_RETENTION: float = Field(default=30 * 24 * 3600.0, gt=0)
    CAMPAIGN_RETENTION: float = Field(default=30 * 24 * 3600.0, gt=0)
    LOG_FORMAT: Literal["text", "json"] = "text"
    LOG_ADDRESSES: bool = False
    METRICS_PORT: int | None = Field(default=None, ge=0, le=65535)
    METRICS_HOST: str = "127.0.0.1"
    CELERY_EVENTS: bool = False
    UNSUBSCRIBE_SECRET: SecretStr | None = None
    UNSUBSCRIBE_URL: str | None = None
    UNSUBSCRIBE_MAILTO: str | None = None
    BOUNCE_MAILBOX_URL: str | None = None
    SOFT_BOUNCE_LIMIT: int = Field(default=3, ge=1)
    SOFT_BOUNCE_WINDOW: float = Field(default=14 * 24 * 3600.0, gt=0)
    SOFT_BOUNCE_SUPPRESSION: float = Field(default=30 * 24 * 3600.0, gt=0)
    COMPLAINT_RATE_ALERT: float = Field(default=0.003, gt=0, le=1)
    BOUNCE_RATE_ALERT: float = Field(default=0.05, gt=0, le=1)
    EVENTS_TASK: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.:-]*$")
    EVENTS_BROKER_URL: str | None = None
    EVENTS_QUEUE: str = "celery"
    SES_SNS_TOPICS: str = ""
    RETURN_PATH: str | None = None


@dataclass(frozen=True)
class Retention:
    """How long finished things are kept in Redis (seconds): nothing is kept forever."""

    dead_letters: float = 30 * 24 * 3600.0  # after the job died
    campaigns: float = 30 * 24 * 3600.0  # after the campaign's last activity


@dataclass(frozen=True)
class Recovery:
    """How a job nobody is sending comes back (store.lifecycle, worker.housekeeping)."""

    lease: float = 30.0  # a sending job's lease, renewed every third of it while it runs
    # A queued job whose message is in no queue list and no worker's hands is lost once
    # its queue has moved this far past it (or emptied): publish delays stay well under it.
    lost_after: float = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by attempts and by age.

    Defaults suit transactional mail: 10 attempts over up to 2 days (Postfix keeps mail for 5
    days; a password reset two days late is worthless).
    """

    base_delay: float = 30.0
    max_delay: float = 3600.0
    max_attempts: int = 10
    max_age: float = 2 * 24 * 3600.0


@dataclass(frozen=True)
class LimiterPolicy:
    """How workers wait for the cluster-wide limits of :mod:`settings.limits`.

    A wait up to ``max_sleep`` seconds sleeps inside the task; a longer one (a daily quota
    used up) defers the job through Redis. A throttling reply halves an account's per-second
    and per-minute rates; each ``throttle_cooldown`` without one doubles them back. A killed
    worker's connection slots return after ``connection_lease`` seconds.
    """

    max_sleep: float = 5.0
    throttle_cooldown: float = 60.0
    connection_lease: float = 15.0


@dataclass(frozen=True)
class Observability:
    """Sentry, logs and metrics (see worker.sentry, worker.logs, worker.metrics)."""

    failing_after: float = 900.0  # transient failures this long → one Sentry event
    log_format: Literal["text", "json"] = "text"
    log_addresses: bool = False  # addresses in log lines are masked unless this is on
    metrics_port: int | None = None  # Prometheus endpoint on the worker, off by default
    metrics_host: str = "127.0.0.1"  # the address it listens on: loopback unless told
    celery_events: bool = False  # task events; Flower turns them on at running workers


@dataclass(frozen=True)
class Unsubscribe:
    """What bulk mail needs for one-click unsubscribe (RFC 8058); see tasks.unsubscribe."""

    secret: SecretStr | None = field(default=None, repr=False)  # signs the tokens
    url: str | None = None  # https endpoint of the app that calls tasks.unsubscribe
    mailto: str | None = None  # optional mailto: alternative


@dataclass(frozen=True)
class Settings:
    """Everything mailworker reads from its environment. Build it with :func:`load_settings`."""

    # Both may carry credentials (a Redis password, a Sentry key): kept out of the repr.
    redis_url: str = field(repr=False)
    accounts: Mapping[str, SmtpAccount]
    smtp_ca_file: Path | None
    smtp_timeout: float
    default_from_email: str | None
    sentry_dsn: str | None = field(repr=False)
    max_message_bytes: int
    redis_timeout: float
    redis_visibility_timeout: int
    retry: RetryPolicy
    account_pause_seconds: float
    failover_after: float = 60.0  # a transient failure this old sends jobs to a fallback
    limiter: LimiterPolicy = LimiterPolicy()
    observability: Observability = Observability()
    unsubscribe: Unsubscribe = Unsubscribe()
    retention: Retention = Retention()
    recovery: Recovery = Recovery()
    dkim: Mapping[str, DkimKey] = field(default_factory=dict)  # by From domain
    feedback: FeedbackPolicy = FeedbackPolicy()
    events: EventsTarget = EventsTarget()
    # Addresses at localhost, *.test, *.local and *.internal (settings.mailboxes).
    allow_local_domains: bool = False

    def account(self, name: str) -> SmtpAccount:
        try:
            return self.accounts[name]
        except KeyError:
            raise SettingsError(
                _account_variable(name),
                f"no SMTP account named {name!r} is configured "
                f"(configured: {sorted(self.accounts) or 'none'})",
            ) from None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration; raise :class:`SettingsError` naming the variable."""
    env = dict(os.environ if environ is None else environ)
    # Empty variables mean "unset", as in most twelve-factor deployments.
    env = {k: v for k, v in env.items() if v != ""}
    try:
        scalars = _Environment.model_validate(_only_known(env))
    except ValidationError as exc:
        error = exc.errors()[0]
        raise SettingsError(str(error["loc"][0]), error["msg"]) from None

    if scalars.SMTP_CA_FILE is not None and not scalars.SMTP_CA_FILE.is_file():
        raise SettingsError("SMTP_CA_FILE", f"{scalars.SMTP_CA_FILE} is not a readable file")
    _check_redis_url(scalars.REDIS_URL)

    return Settings(
        redis_url=_redis_url(scalars.REDIS_URL, scalars.REDIS_SSL_CERT_REQS),
        accounts=_accounts(env),
        dkim=dkim_keys(env),
        smtp_ca_file=scalars.SMTP_CA_FILE,
        smtp_timeout=scalars.SMTP_TIMEOUT,
        default_from_email=_from_email(scalars.DEFAULT_FROM_EMAIL, scalars.ALLOW_LOCAL_DOMAINS),
        allow_local_domains=scalars.ALLOW_LOCAL_DOMAINS,
        sentry_dsn=scalars.SENTRY_DSN,
        max_message_bytes=scalars.MAX_MESSAGE_BYTES,
        redis_timeout=scalars.REDIS_TIMEOUT,
        redis_visibility_timeout=scalars.REDIS_VISIBILITY_TIMEOUT,
        **_waits(scalars),
        observability=Observability(
            failing_after=scalars.SENTRY_FAILING_AFTER_SECONDS,
            log_format=scalars.LOG_FORMAT,
            log_addresses=scalars.LOG_ADDRESSES,
            metrics_port=scalars.METRICS_PORT,
            metrics_host=scalars.METRICS_HOST,
            celery_events=scalars.CELERY_EVENTS,
        ),
        retention=Retention(
            dead_letters=scalars.DEAD_LETTER_RETENTION, campaigns=scalars.CAMPAIGN_RETENTION
        ),
        recovery=Recovery(
            lease=scalars.JOB_LEASE_SECONDS, lost_after=scalars.LOST_MESSAGE_AFTER_SECONDS
        ),
        unsubscribe=Unsubscribe(
            secret=_unsubscribe_secret(scalars.UNSUBSCRIBE_SECRET),
            url=_https_url(scalars.UNSUBSCRIBE_URL),
            mailto=scalars.UNSUBSCRIBE_MAILTO,
        ),
        **_feedback(scalars),
    )


def _waits(scalars: _Environment) -> dict[str, Any]:
    """Retries, pauses, failover and the rate limiter's waits."""
    return {
        "retry": RetryPolicy(
            base_delay=scalars.RETRY_BASE_DELAY,
            max_delay=scalars.RETRY_MAX_DELAY,
            max_attempts=scalars.RETRY_MAX_ATTEMPTS,
            max_age=scalars.RETRY_MAX_AGE,
        ),
        "account_pause_seconds": scalars.ACCOUNT_PAUSE_SECONDS,
        "failover_after": scalars.FAILOVER_AFTER_SECONDS,
        "limiter": LimiterPolicy(
            max_sleep=scalars.RATE_LIMIT_MAX_SLEEP,
            throttle_cooldown=scalars.THROTTLE_COOLDOWN_SECONDS,
            connection_lease=scalars.CONNECTION_LEASE_SECONDS,
        ),
    }


def _feedback(scalars: _Environment) -> dict[str, Any]:
    """After the 250: the bounce mailbox, bounce and complaint rules, events."""
    mailbox = scalars.BOUNCE_MAILBOX_URL
    return {
        "feedback": FeedbackPolicy(
            mailbox=parse_bounce_mailbox(mailbox) if mailbox else None,
            soft_bounce_limit=scalars.SOFT_BOUNCE_LIMIT,
            soft_bounce_window=scalars.SOFT_BOUNCE_WINDOW,
            soft_bounce_suppression=scalars.SOFT_BOUNCE_SUPPRESSION,
            complaint_rate_alert=scalars.COMPLAINT_RATE_ALERT,
            bounce_rate_alert=scalars.BOUNCE_RATE_ALERT,
            sns_topics=tuple(t.strip() for t in scalars.SES_SNS_TOPICS.split(",") if t.strip()),
            return_path=_return_path(scalars.RETURN_PATH),
        ),
        "events": EventsTarget(
            task=scalars.EVENTS_TASK,
            broker_url=scalars.EVENTS_BROKER_URL,
            queue=scalars.EVENTS_QUEUE,
        ),
    }


def _return_path(value: str | None) -> str | None:
    """A plain address (no display name, no '+': the job id goes after one)."""
    if value is None:
        return None
    try:
        address = validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise SettingsError("RETURN_PATH", f"not an email address: {exc}") from None
    if "+" in address.partition("@")[0]:
        raise SettingsError("RETURN_PATH", "give the address without '+': mailworker adds "
                            "+<job id> to it for each message (VERP)")  # fmt: skip
    return address


def _only_known(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k in _Environment.model_fields}


def _accounts(env: Mapping[str, str]) -> dict[str, SmtpAccount]:
    accounts: dict[str, SmtpAccount] = {}
    for variable in sorted(env):
        if variable == "SMTP_URL" or variable.startswith("SMTP_URL_"):
            account = parse_smtp_url(variable, env[variable])
            if account.name in accounts:
                raise SettingsError(variable, f"account {account.name!r} is defined twice")
            accounts[account.name] = account
    for account in accounts.values():
        for name in account.fallbacks:
            if name == account.name or name not in accounts:
                raise SettingsError(
                    account.variable,
                    f"fallback={name}: "
                    + ("an account cannot fall back on itself" if name == account.name
                       else f"no account {name!r}; set {_account_variable(name)}"),
                )  # fmt: skip
    return accounts


def _account_variable(name: str) -> str:
    return "SMTP_URL" if name == "default" else f"SMTP_URL_{name.upper()}"


def _check_redis_url(url: str) -> None:
    """Refuse a REDIS_URL that redis-py or kombu would misread, saying why without any part
    of it (a password with an unencoded '/' would otherwise be shown as the port)."""
    if not url.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
        raise SettingsError("REDIS_URL", "use redis://, rediss://, unix:// or sentinel://")
    if url.startswith("sentinel://"):
        try:
            sentinel_parts(url)
        except SettingsError:
            raise
        except ValueError as exc:
            raise SettingsError("REDIS_URL", str(exc)) from None
    else:
        if not url.startswith("unix://"):
            port_of("REDIS_URL", split_url("REDIS_URL", url), 6379)
        try:
            parse_url(url)  # what redis-py will read: its errors name an option, not a value
        except ValueError as exc:
            raise SettingsError("REDIS_URL", f"redis-py cannot use it: {exc}") from None


def _redis_url(url: str, cert_reqs: str) -> str:
    """``rediss://`` without ``ssl_cert_reqs`` gets REDIS_SSL_CERT_REQS (``required``).

    Heroku Redis presents a self-signed certificate: set REDIS_SSL_CERT_REQS=none there
    (the connection is still encrypted, not authenticated by certificate).
    """
    if not url.startswith("rediss://") or "ssl_cert_reqs=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}ssl_cert_reqs={cert_reqs}"


MIN_UNSUBSCRIBE_SECRET_BYTES = 32  # HMAC-SHA256 keys shorter than the hash are guessable


def _unsubscribe_secret(value: SecretStr | None) -> SecretStr | None:
    if value is not None and len(value.get_secret_value().encode()) < MIN_UNSUBSCRIBE_SECRET_BYTES:
        raise SettingsError(
            "UNSUBSCRIBE_SECRET",
            f"too short: use at least {MIN_UNSUBSCRIBE_SECRET_BYTES} bytes of random text, e.g. "
            "the output of: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    return value


def _https_url(value: str | None) -> str | None:
    if value is not None and not value.startswith("https://"):
        raise SettingsError(
            "UNSUBSCRIBE_URL", "must be an https:// URL (Gmail and Yahoo require https)"
        )
    return value


def _from_email(value: str | None, local_domains: bool) -> str | None:
    if value is None:
        return None
    try:
        parse_mailbox(value, local_domains=local_domains)
    except AddressError as exc:
        raise SettingsError("DEFAULT_FROM_EMAIL", str(exc)) from None
    return value  # kept as written ("App <app@example.com>"); parsed again per job
