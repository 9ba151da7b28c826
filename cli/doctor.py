"""``mailworker doctor``: every check worth running before blaming the code, in one place.

Redis (reachable, version, round-trip time), each SMTP account (TLS, certificate, AUTH, via
:mod:`worker.check`), what campaigns need (unsubscribe settings), the bounce mailbox when
BOUNCE_MAILBOX_URL is set (TLS, login, folder), and, when online, the DNS
records receivers look at for the From domain: SPF and DMARC (DKIM needs the selector your
provider signs with, so it is named, not guessed).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import dns.exception
import dns.resolver
import redis

from mailworker.cli.check import check_account, unverified_warning
from mailworker.settings import Settings
from mailworker.settings.dkim import DkimKey
from mailworker.store.client import get_redis


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool | None  # None: a warning or a check that was skipped
    detail: str
    advice: str = ""


def run_doctor(settings: Settings, *, online: bool = True) -> list[Finding]:
    findings = [_redis()]
    if not settings.accounts:
        findings.append(
            Finding(
                "accounts", False, "no SMTP account", "set SMTP_URL (see docs/configuration.md)"
            )
        )
    for account in settings.accounts.values():
        report = asyncio.run(check_account(account, settings))
        detail = (
            f"{account.address}: {report.tls_version}, AUTH as {report.authenticated_as}"
            if report.ok
            else f"{account.address}: {report.error}"
        )
        findings.append(Finding(f"account {account.name}", report.ok, detail, report.advice or ""))
        warning = unverified_warning(account)
        if warning is not None:
            findings.append(Finding(f"tls {account.name}", None, warning))
    findings.append(_campaigns(settings))
    if settings.feedback.mailbox is not None:
        findings.append(_bounce_mailbox(settings))
    domain = _from_domain(settings)
    if not online:
        findings.append(Finding("dns", None, "skipped (--offline)"))
    elif domain is None:
        findings.append(Finding("dns", None, "no DEFAULT_FROM_EMAIL: no domain to look up"))
    else:
        findings += _dns(domain, signs_itself=domain in settings.dkim)
    if online:
        findings += [_dkim_record(key) for key in settings.dkim.values()]
    return findings


def _bounce_mailbox(settings: Settings) -> Finding:
    """BOUNCE_MAILBOX_URL: TLS, login and folder, as the bounces process will need them."""
    from mailworker.feedback.mailbox import MailboxError, connect

    mailbox = settings.feedback.mailbox
    assert mailbox is not None
    try:
        imap = connect(mailbox, settings)
    except MailboxError as exc:
        return Finding("bounce mailbox", False, str(exc),
                       "check BOUNCE_MAILBOX_URL (imaps://user:pass@host/FOLDER)")  # fmt: skip
    try:
        waiting = len(imap.search("ALL"))
    finally:
        imap.logout()
    return Finding("bounce mailbox", True,
                   f"{mailbox.host}:{mailbox.port} {mailbox.folder}: {waiting} message(s) "
                   f"waiting; read ones go to {mailbox.done_folder}")  # fmt: skip


def _redis() -> Finding:
    try:
        client = get_redis()
        started = time.perf_counter()
        client.ping()
        rtt = (time.perf_counter() - started) * 1000
        version = _version(client)
    except (redis.RedisError, OSError) as exc:
        return Finding("redis", False, str(exc), "start Redis or point REDIS_URL at it")
    return Finding("redis", True, f"Redis {version}, round trip {rtt:.1f} ms")


def _version(client: redis.Redis) -> str:
    try:
        return str(client.info("server").get("redis_version", "?"))
    except redis.exceptions.NoPermissionError:
        return "?"  # an ACL user without INFO (docs/security.md's lock-down): not a problem


def _campaigns(settings: Settings) -> Finding:
    unsubscribe = settings.unsubscribe
    if unsubscribe.secret is None or unsubscribe.url is None:
        return Finding(
            "campaigns",
            None,
            "UNSUBSCRIBE_SECRET or UNSUBSCRIBE_URL not set: campaigns cannot start",
            "set both to send bulk campaigns (transactional mail does not need them)",
        )
    return Finding("campaigns", True, f"one-click unsubscribe via {unsubscribe.url}")


def _from_domain(settings: Settings) -> str | None:
    sender = settings.default_from_email
    if not sender:
        return None
    return sender.rstrip(">").rpartition("@")[2].lower() or None


def _dns(domain: str, *, signs_itself: bool = False) -> list[Finding]:
    spf = _txt(domain, "v=spf1")
    dmarc = _txt(f"_dmarc.{domain}", "v=dmarc1")
    findings = [
        _record("spf", domain, spf, "publish a TXT record 'v=spf1 include:<provider> -all'"),
        _record("dmarc", f"_dmarc.{domain}", dmarc, "publish a TXT record 'v=DMARC1; p=none; ...'"),
    ]
    if not signs_itself:
        findings.append(
            Finding(
                "dkim",
                None,
                f"check <selector>._domainkey.{domain} for your provider's selector",
                "Gmail and Yahoo require DKIM for bulk senders "
                "(or set DKIM, see docs/configuration.md)",
            )
        )
    return findings


def _dkim_record(key: DkimKey) -> Finding:
    """Is our signing key published where receivers will look for it?"""
    found = _txt(key.dns_name, "v=dkim1")
    advice = f"publish a TXT record at {key.dns_name}: '{key.dns_record}'"
    if isinstance(found, Exception):
        return Finding("dkim", None, f"{key.dns_name}: DNS lookup failed ({type(found).__name__})")
    if found is None:
        return Finding("dkim", False, f"no DKIM record at {key.dns_name}", advice)
    published = "".join(found.partition("p=")[2].split(";")[0].split())
    if published != key.public_key_b64:
        return Finding("dkim", False, f"{key.dns_name} holds another public key", advice)
    return Finding("dkim", True, f"{key.dns_name} matches the {key.algorithm} signing key")


def _txt(name: str, prefix: str) -> str | Exception | None:
    try:
        answers = dns.resolver.resolve(name, "TXT", lifetime=5)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except dns.exception.DNSException as exc:
        return exc
    for answer in answers:
        text = b"".join(answer.strings).decode(errors="replace")
        if text.lower().startswith(prefix):
            return text
    return None


def _record(check: str, name: str, found: str | Exception | None, advice: str) -> Finding:
    if isinstance(found, Exception):
        return Finding(check, None, f"{name}: DNS lookup failed ({type(found).__name__})")
    if found is None:
        return Finding(check, False, f"no {check.upper()} record at {name}", advice)
    return Finding(check, True, found)
