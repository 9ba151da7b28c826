"""TLS before AUTH, always; untrusted certificates and wrong passwords fail clearly."""

from __future__ import annotations

import pytest

from settings import get_settings
from tasks import send_email
from tasks.validation import build_job
from tests.conftest import PASSWORD
from tests.helpers import wait_for_status
from worker.devserver import DevServer
from worker.errors import AuthenticationRefused, CertificateRejected, TlsUnavailable
from worker.runtime import Runtime

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
    record = wait_for_status(result.id, "deferred")  # the account is paused, the mail kept
    assert "STARTTLS" in record["error"]
    assert plaintext_server.messages == []
    assert plaintext_server.log.plaintext_auth_attempts == 0
    assert plaintext_server.log.commands["AUTH"] == 0


def test_untrusted_certificate_means_nothing_sent(untrusted_server: DevServer) -> None:
    with pytest.raises(CertificateRejected, match="SMTP_CA_FILE"):
        _deliver_directly("untrusted")
    result = send_email.delay(to="ann@example.com", subject="x", text="x", account="untrusted")
    assert "did not verify" in wait_for_status(result.id, "deferred")["error"]
    assert untrusted_server.messages == []
    assert untrusted_server.log.commands["AUTH"] == 0


def test_wrong_password_is_a_clear_error_naming_the_account() -> None:
    with pytest.raises(AuthenticationRefused) as caught:
        _deliver_directly("badpass")
    message = str(caught.value)
    assert "'badpass'" in message and "SMTP_URL_BADPASS" in message and "535" in message
    assert "wrong-password" not in message and PASSWORD not in message
    result = send_email.delay(to="ann@example.com", subject="x", text="x", account="badpass")
    record = wait_for_status(result.id, "deferred")
    assert "badpass" in record["error"] and "wrong-password" not in str(record)
