"""XOAUTH2: tokens from a registered provider or a client-credentials endpoint, refreshed."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from mailworker.delivery.errors import AuthenticationRefused
from mailworker.delivery.oauth import register_token_provider
from mailworker.delivery.runtime import Runtime
from mailworker.dev.devserver import DevServer
from mailworker.settings import SettingsError, get_settings, load_settings
from mailworker.tasks.validation import build_job
from tests.helpers import extra_account
from tests.test_cli import mailworker

MAILBOX = "robot@example.com"
CLIENT_SECRET = "client-secret-Zq81"


@pytest.fixture
def oauth_server(certificate_dir: Path, ca: trustme.CA) -> Iterator[DevServer]:
    with DevServer(
        tls="starttls", tokens={MAILBOX: "good-token"}, ca=ca, certificate_dir=certificate_dir
    ) as server:
        yield server


def _send(account: str, runtime: Runtime) -> None:
    job = build_job(
        get_settings(), {"to": "ann@example.com", "subject": "x", "text": "x", "account": account}
    )
    runtime.deliver(job)


def test_a_refused_token_is_refreshed_once_and_the_message_sent(
    oauth_server: DevServer, environment: dict[str, str]
) -> None:
    tokens = iter(["expired-token", "good-token"])
    register_token_provider("graph", lambda: next(tokens))
    url = f"smtp+starttls://{urllib.parse.quote(MAILBOX)}@127.0.0.1:{oauth_server.port}"
    runtime = Runtime()
    with extra_account("graph", url + "?auth=xoauth2"):
        try:
            _send("graph", runtime)
        finally:
            runtime.close()
    [message] = oauth_server.messages
    assert message.user == MAILBOX and message.tls
    assert oauth_server.log.commands["AUTH"] == 2


class TokenEndpoint(BaseHTTPRequestHandler):
    issued = itertools.count(1)
    smtp: DevServer
    requests: list[dict[str, list[str]]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.requests.append(form)
        if form.get("client_secret") != [CLIENT_SECRET]:
            self.send_response(401)
            self.end_headers()
            return
        token = f"tok-{next(self.issued)}"
        self.smtp.tokens[MAILBOX] = token  # the mail server accepts only the newest token
        body = json.dumps({"access_token": token, "expires_in": 61}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def token_endpoint(oauth_server: DevServer) -> Iterator[tuple[str, list[dict[str, list[str]]]]]:
    requests: list[dict[str, list[str]]] = []
    handler = type("Handler", (TokenEndpoint,), {"smtp": oauth_server, "requests": requests})
    http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_address[1]}/token", requests
    http.shutdown()
    http.server_close()


def _client_credentials_url(
    server: DevServer, token_url: str, secret: str, *, plain_http: bool = True
) -> str:
    """The account URL; the test's token endpoint speaks plain http, which takes the
    explicit ``insecure_token_url=on`` (a local test server is what it exists for)."""
    parameters = {
        "auth": "xoauth2",
        "token_url": token_url,
        "client_id": "app-123",
        "scope": "smtp.send",
        "max_messages": 1,
    }
    if plain_http:
        parameters["insecure_token_url"] = "on"
    query = urllib.parse.urlencode(parameters)
    return f"smtp+starttls://{urllib.parse.quote(MAILBOX)}:{secret}@127.0.0.1:{server.port}?{query}"


@pytest.mark.slow
def test_client_credentials_tokens_are_refreshed_before_they_expire(
    oauth_server: DevServer, token_endpoint: tuple[str, list], environment: dict[str, str]
) -> None:
    import time

    token_url, requests = token_endpoint
    runtime = Runtime()
    with extra_account("m365", _client_credentials_url(oauth_server, token_url, CLIENT_SECRET)):
        try:
            _send("m365", runtime)
            time.sleep(1.2)  # the 61 s token is now inside the 60 s refresh margin
            _send("m365", runtime)
        finally:
            runtime.close()
    assert len(oauth_server.messages) == 2
    assert len(requests) == 2 and requests[0]["scope"] == ["smtp.send"]
    assert oauth_server.log.commands["AUTH"] == 2  # no refused token on the way


def test_a_bad_client_secret_is_a_clear_error_without_the_secret(
    oauth_server: DevServer, token_endpoint: tuple[str, list], environment: dict[str, str]
) -> None:
    token_url, _ = token_endpoint
    runtime = Runtime()
    with extra_account("m365bad", _client_credentials_url(oauth_server, token_url, "nope-x")):
        try:
            with pytest.raises(AuthenticationRefused) as caught:
                _send("m365bad", runtime)
        finally:
            runtime.close()
    assert "401" in str(caught.value) and "SMTP_URL_M365BAD" in str(caught.value)
    assert "nope-x" not in str(caught.value)
    assert oauth_server.messages == []


def test_a_plain_http_token_url_is_refused_unless_explicitly_allowed(
    oauth_server: DevServer,
    token_endpoint: tuple[str, list],
    environment: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    token_url, requests = token_endpoint
    refused = _client_credentials_url(oauth_server, token_url, CLIENT_SECRET, plain_http=False)
    with pytest.raises(SettingsError) as caught:
        load_settings({"SMTP_URL_M365": refused})
    assert caught.value.variable == "SMTP_URL_M365" and "https" in str(caught.value)
    checked = mailworker("check", "m365", env={**environment, "SMTP_URL_M365": refused})
    assert checked.returncode == 2 and "token_url" in checked.stderr
    assert requests == [] and CLIENT_SECRET not in checked.stdout + checked.stderr

    allowed = _client_credentials_url(oauth_server, token_url, CLIENT_SECRET)
    checked = mailworker("check", "m365", env={**environment, "SMTP_URL_M365": allowed})
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "WARNING" in checked.stdout and "insecure_token_url=on" in checked.stdout
    runtime = Runtime()
    with extra_account("m365", allowed), caplog.at_level(logging.WARNING):
        try:
            _send("m365", runtime)
        finally:
            runtime.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "mailworker.oauth"]
    assert warnings and all("'m365'" in w and "plain http" in w for w in warnings)
    for scheme in ("file:///etc/passwd", "ftp://tokens.example/t"):
        with pytest.raises(SettingsError, match="https"):
            load_settings(
                {
                    "SMTP_URL_M365": refused.replace(
                        urllib.parse.quote(token_url, safe=""), urllib.parse.quote(scheme, safe="")
                    )
                }
            )
