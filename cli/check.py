"""``mailworker check``: open a real session to an account and explain what was found."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailworker.delivery.connection import open_connection
from mailworker.delivery.errors import (
    AuthenticationRefused,
    CertificateRejected,
    DeliveryError,
    TlsUnavailable,
    TransientFailure,
)
from mailworker.delivery.oauth import token_getter_for
from mailworker.delivery.pool import quit_session
from mailworker.delivery.tls import account_tls_context
from mailworker.settings import Settings, SmtpAccount


@dataclass
class CheckReport:
    account: str
    address: str
    ok: bool
    tls_version: str | None = None
    certificate_subject: str | None = None
    certificate_expires: str | None = None
    auth_mechanisms: list[str] = field(default_factory=list)
    authenticated_as: str | None = None
    error: str | None = None
    advice: str | None = None
    warning: str | None = None


def unverified_warning(account: SmtpAccount) -> str | None:
    """What ``check`` and ``doctor`` say about an account with ``tls_verify=off`` or
    ``insecure_token_url=on``."""
    warnings = []
    if not account.tls_verify:
        warnings.append(
            f"tls_verify=off in {account.variable}: the server's certificate and host name "
            "are NOT verified, so anyone on the network path can read the password and the "
            "mail; remove it (for a private CA set SMTP_CA_FILE instead)"
        )
    if account.insecure_token_url:
        warnings.append(
            f"insecure_token_url=on in {account.variable}: the OAuth client secret is posted "
            "to token_url over plain http, readable by anyone on the network path; use the "
            "provider's https token endpoint"
        )
    return "; ".join(warnings) or None


async def check_account(account: SmtpAccount, settings: Settings) -> CheckReport:
    report = CheckReport(account=account.name, address=account.address, ok=False)
    report.warning = unverified_warning(account)
    try:
        smtp = await open_connection(
            account,
            account_tls_context(account, settings.smtp_ca_file),
            timeout=settings.smtp_timeout,
            token_getter=token_getter_for(account),
        )
    except DeliveryError as exc:
        report.error = str(exc)
        report.advice = advice_for(exc, account)
        return report
    except TimeoutError:
        report.error = f"no answer from {account.address} within {settings.smtp_timeout} s"
        report.advice = "check the host and port, and that no firewall drops the traffic"
        return report
    try:
        tls = smtp.get_transport_info("ssl_object")
        if isinstance(tls, ssl.SSLObject | ssl.SSLSocket):
            report.tls_version = tls.version()
            _describe_certificate(report, tls.getpeercert() or {})
        report.auth_mechanisms = [m.upper() for m in smtp.server_auth_methods]
        report.authenticated_as = account.username
        report.ok = True
    finally:
        await quit_session(smtp)
    return report


def advice_for(exc: DeliveryError, account: SmtpAccount) -> str:
    if isinstance(exc, AuthenticationRefused):
        return (
            f"{exc.code}: the server refused the credentials. Fix the user name or password in "
            f"{account.variable} (percent-encode @ : / in them). Microsoft 365 and Google may "
            "refuse password AUTH altogether: use auth=xoauth2"
        )
    if isinstance(exc, TlsUnavailable):
        return (
            f"port {account.port} without STARTTLS: use the provider's submission port, 587 "
            "with smtp+starttls:// or 465 with smtps://"
        )
    if isinstance(exc, CertificateRejected):
        return (
            "the certificate did not verify: check the host name matches the certificate; for "
            "a private CA set SMTP_CA_FILE to its PEM file"
        )
    if isinstance(exc, TransientFailure) and "wrong version number" in str(exc).lower():
        return "TLS did not start: port 587 speaks STARTTLS (smtp+starttls://), 465 speaks smtps://"
    return "check the host and port in " + account.variable + " and that the server is up"


def _describe_certificate(report: CheckReport, certificate: Mapping[str, object]) -> None:
    subject = certificate.get("subject") or ()
    parts = [f"{k}={v}" for rdn in subject for k, v in rdn]  # type: ignore[attr-defined]
    alt_names = [v for _, v in certificate.get("subjectAltName", ())]  # type: ignore[attr-defined]
    report.certificate_subject = ", ".join(parts) or ", ".join(alt_names) or None
    not_after = certificate.get("notAfter")
    if isinstance(not_after, str):
        expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)
        report.certificate_expires = expires.date().isoformat()
