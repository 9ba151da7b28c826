"""TLS before AUTH, always; untrusted certificates and wrong passwords fail clearly."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl

import pytest

from mailworker.delivery.connection import open_connection
from mailworker.delivery.errors import AuthenticationRefused, CertificateRejected, TlsUnavailable
from mailworker.delivery.pool import quit_session
from mailworker.delivery.runtime import Runtime
from mailworker.delivery.tls import account_tls_context
from mailworker.dev.devserver import DevServer
from mailworker.settings import SmtpAccount, get_settings, parse_smtp_url
from mailworker.tasks import send_email
from mailworker.tasks.validation import build_job
from tests.conftest import PASSWORD
from tests.helpers import extra_account, messages_of, wait_for_status
from tests.test_cli import mailworker

pytestmark = pytest.mark.usefixtures("celery_worker")


def _deliver_directly(account: str) -> None:
    job = build_job(
        get_settings(), {"to": "ann@example.com", "subject": "x", "text": "x", "account": account}
    )
    runtime = Runtime()
    try:
        runtime.deliver(job)
    finally:
        runtime.close()


def test_no_starttls_means_nothing_sent_and_no_auth_in_clear(plaintext_server: DevServer) -> None:
    with pytest.raises(TlsUnavailable, match="does not offer STARTTLS") as caught:
        _deliver_directly("notls")
    assert "notls" in str(caught.value)
    result = send_email.delay(to="ann@example.com", subject="x", text="x", account="notls")
    record = wait_for_status(result.id, "paused")  # the account is paused, the mail kept
    assert "STARTTLS" in record["error"]
    assert plaintext_server.messages == []
    assert plaintext_server.log.plaintext_auth_attempts == 0
    assert plaintext_server.log.commands["AUTH"] == 0


def test_untrusted_certificate_means_nothing_sent(untrusted_server: DevServer) -> None:
    with pytest.raises(CertificateRejected, match="SMTP_CA_FILE"):
        _deliver_directly("untrusted")
    result = send_email.delay(to="ann@example.com", subject="x", text="x", account="untrusted")
    assert "did not verify" in wait_for_status(result.id, "paused")["error"]
    assert untrusted_server.messages == []
    assert untrusted_server.log.commands["AUTH"] == 0


def test_the_worker_delivers_to_an_untrusted_server_only_with_tls_verify_off(
    untrusted_server: DevServer, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        extra_account("laxworker", untrusted_server.url() + "?tls_verify=off"),
        caplog.at_level(logging.WARNING, logger="mailworker.tls"),
    ):
        result = send_email.delay(to="ann@example.com", subject="x", text="x", account="laxworker")
        assert wait_for_status(result.id, "sent", "deferred")["state"] == "sent"
    [received] = messages_of(untrusted_server, result.id)
    assert received.tls and received.user is not None
    assert any("'laxworker'" in r.getMessage() for r in caplog.records)


def test_wrong_password_is_a_clear_error_naming_the_account() -> None:
    with pytest.raises(AuthenticationRefused) as caught:
        _deliver_directly("badpass")
    message = str(caught.value)
    assert "'badpass'" in message and "SMTP_URL_BADPASS" in message and "535" in message
    assert "wrong-password" not in message and PASSWORD not in message
    result = send_email.delay(to="ann@example.com", subject="x", text="x", account="badpass")
    record = wait_for_status(result.id, "paused")
    assert "badpass" in record["error"] and "wrong-password" not in str(record)


def test_tls_verify_off_encrypts_without_verifying_and_warns_on_every_connection(
    untrusted_server: DevServer, environment: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = get_settings()
    strict = parse_smtp_url("SMTP_URL_STRICT", untrusted_server.url())
    lax = parse_smtp_url("SMTP_URL_LAX", untrusted_server.url() + "?tls_verify=off")
    assert strict.tls_verify and not lax.tls_verify

    async def open_and_quit(account: SmtpAccount) -> str | None:
        context = account_tls_context(account, settings.smtp_ca_file)
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        smtp = await open_connection(account, context, timeout=10)
        version = smtp.get_transport_info("ssl_object").version()
        await quit_session(smtp)
        return version

    with pytest.raises(CertificateRejected):
        asyncio.run(open_and_quit(strict))
    with caplog.at_level(logging.WARNING, logger="mailworker.tls"):
        versions = [asyncio.run(open_and_quit(lax)) for _ in range(2)]
    assert set(versions) <= {"TLSv1.2", "TLSv1.3"}
    warnings = [r.getMessage() for r in caplog.records if r.name == "mailworker.tls"]
    assert len(warnings) == 2
    assert all("'lax'" in w and "NOT verified" in w and "SMTP_URL_LAX" in w for w in warnings)
    assert account_tls_context(strict).verify_mode == ssl.CERT_REQUIRED
    assert account_tls_context(strict).check_hostname


def test_check_and_doctor_flag_an_unverified_account(
    untrusted_server: DevServer, environment: dict[str, str]
) -> None:
    env = {**environment, "SMTP_URL_LAX": untrusted_server.url() + "?tls_verify=off"}
    checked = mailworker("check", "lax", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "WARNING" in checked.stdout and "tls_verify=off in SMTP_URL_LAX" in checked.stdout
    doctor = mailworker("doctor", "--offline", "--json", env=env)
    findings = {f["check"]: f for f in json.loads(doctor.stdout)}
    assert findings["tls lax"]["ok"] is None and "NOT verified" in findings["tls lax"]["detail"]
    assert "tls default" not in findings
    assert PASSWORD not in checked.stdout + checked.stderr + doctor.stdout + doctor.stderr
