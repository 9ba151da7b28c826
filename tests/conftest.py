"""Real parts for every test: a private Redis, real TLS SMTP servers, a real Celery worker.

Nothing here is mocked. The session starts its own redis-server (or uses
MAILWORKER_TEST_REDIS_URL, which must be a Redis the tests may write to), SMTP servers that
require TLS and AUTH with certificates from a throwaway CA, and one in-process Celery worker
with the ``threads`` pool, as in production.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
import trustme

from mailworker.dev.devredis import (
    MAILWORKER_ACL_RULES,
    AclUser,
    RedisUnavailable,
    start_private_redis,
)
from mailworker.dev.devserver import DevServer
from mailworker.settings import reload_settings
from mailworker.store.client import reset_redis
from mailworker.tasks.app import configure_app

USER = "mailer@example.com"
PASSWORD = "Pw-7f3c9-zebra-QUOKKA"  # distinctive: tests search raw bytes for it
FROM = "App <app@example.com>"
UNSUBSCRIBE_SECRET = "Unsub-Secret-Quetzal-7731-Margay-4402"  # >= 32 bytes, distinctive
REDIS_USER = "mailer"
REDIS_PASSWORD = "Redis-Pw-Okapi-6620"  # distinctive, like PASSWORD


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    given = os.environ.get("MAILWORKER_TEST_REDIS_URL")
    if given:
        yield given
        return
    try:
        server = start_private_redis()
    except RedisUnavailable as exc:
        pytest.exit(str(exc), returncode=3)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def locked_redis_url() -> Iterator[str]:
    """A private Redis locked down as the README says: ``default`` off, one ACL user."""
    server = start_private_redis(user=AclUser(REDIS_USER, REDIS_PASSWORD, MAILWORKER_ACL_RULES))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def certificate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("certs")


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


def _server(certificate_dir: Path, ca: trustme.CA, **kwargs: object) -> DevServer:
    kwargs.setdefault("users", {USER: PASSWORD})
    return DevServer(certificate_dir=certificate_dir, ca=ca, **kwargs).start()  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def starttls_server(certificate_dir: Path, ca: trustme.CA) -> Iterator[DevServer]:
    server = _server(certificate_dir, ca, tls="starttls")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def implicit_server(certificate_dir: Path, ca: trustme.CA) -> Iterator[DevServer]:
    server = _server(certificate_dir, ca, tls="implicit")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def plaintext_server(certificate_dir: Path, ca: trustme.CA) -> Iterator[DevServer]:
    """Offers no STARTTLS but advertises AUTH in clear: a trap a client must not fall into."""
    server = _server(certificate_dir, ca, tls="none", advertise_auth_in_clear=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def untrusted_server(certificate_dir: Path) -> Iterator[DevServer]:
    """STARTTLS with a certificate from a CA the client does not know."""
    server = DevServer(tls="starttls", users={USER: PASSWORD}, ca=trustme.CA()).start()
    yield server
    server.stop()


@pytest.fixture
def server(certificate_dir: Path, ca: trustme.CA) -> Iterator[DevServer]:
    """A fresh STARTTLS + AUTH server for one test (set ``server.fault`` to misbehave)."""
    with DevServer(
        tls="starttls", users={USER: PASSWORD}, ca=ca, certificate_dir=certificate_dir
    ) as running:
        yield running


@pytest.fixture(scope="session")
def environment(
    redis_url: str,
    starttls_server: DevServer,
    implicit_server: DevServer,
    plaintext_server: DevServer,
    untrusted_server: DevServer,
) -> Iterator[dict[str, str]]:
    """The process environment every test runs in: one account per server kind."""
    env = {
        "REDIS_URL": redis_url,
        "SMTP_URL": starttls_server.url(),
        "SMTP_URL_IMPLICIT": implicit_server.url(),
        "SMTP_URL_NOTLS": plaintext_server.url(),
        "SMTP_URL_UNTRUSTED": untrusted_server.url(),
        "SMTP_URL_BADPASS": starttls_server.url(USER, "wrong-password"),
        "SMTP_CA_FILE": str(starttls_server.ca_file),
        "SMTP_TIMEOUT": "10",
        "DEFAULT_FROM_EMAIL": FROM,
        # Seconds, not minutes: the tests watch whole retry and pause cycles.
        "RETRY_BASE_DELAY": "0.2",
        "RETRY_MAX_DELAY": "2",
        "ACCOUNT_PAUSE_SECONDS": "2",
        # A throttled account recovers within seconds; a killed worker's slots within 3 s.
        "THROTTLE_COOLDOWN_SECONDS": "1",
        "CONNECTION_LEASE_SECONDS": "3",
        "UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET,
        "UNSUBSCRIBE_URL": "https://app.example.com/unsubscribe",
        "UNSUBSCRIBE_MAILTO": "unsubscribe@app.example.com",
        # A killed worker's jobs come back one lease (4 s) after it died (or when kombu
        # restores its unacked messages, after 20 s); a job whose message was lost, 8 s
        # after its queue moved past it.
        "REDIS_VISIBILITY_TIMEOUT": "20",
        "JOB_LEASE_SECONDS": "4",
        "LOST_MESSAGE_AFTER_SECONDS": "8",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    configure_app(reload_settings())
    reset_redis()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reload_settings()
    reset_redis()


@pytest.fixture(scope="session")
def celery_worker(environment: dict[str, str]) -> Iterator[object]:
    from celery.contrib.testing.worker import start_worker

    from mailworker.delivery.runtime import close_runtime
    from mailworker.worker import app

    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker
    # The embedded worker stops cold, which sends no worker_shutdown signal.
    close_runtime()


@pytest.fixture
def redis(environment: dict[str, str]) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(environment["REDIS_URL"])
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _fresh_suppression_list(request: pytest.FixtureRequest) -> Iterator[None]:
    """A bounce in one test must not silence the shared test addresses of the next."""
    yield
    if "environment" in request.fixturenames:
        from mailworker.store.client import get_redis
        from mailworker.store.suppression import scope_key, scopes

        get_redis().delete(*(scope_key(scope) for scope in scopes()))
