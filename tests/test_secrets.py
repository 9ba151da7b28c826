"""Secrets never leave the worker's memory: one full send/fail cycle with distinctive
passwords, then a search of everything mailworker writes anywhere.

Searched: the worker's log (Celery's banner included), every Sentry envelope, every key of
the Redis (job records, dead letters, ledgers, limits),
the output of every ``mailworker`` command, and the text and traceback of the exceptions a
caller or an operator sees.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from mailworker.delivery.errors import AuthenticationRefused
from mailworker.delivery.runtime import Runtime
from mailworker.dev.devserver import DevServer, RecordingSMTP, Reply, free_port
from mailworker.settings import SettingsError, load_settings
from mailworker.tasks import status
from mailworker.tasks.validation import build_job
from tests.conftest import REDIS_PASSWORD, UNSUBSCRIBE_SECRET, USER
from tests.helpers import send_elsewhere, worker_process
from tests.sentry_sink import SentrySink
from tests.test_cli import mailworker

SMTP_PASSWORD = "Smtp-Pw-Narwhal-93117"
WRONG_PASSWORD = "Wrong-Pw-Axolotl-2284"
QUEUE = "secrets"
SEND_COMMAND = (
    "send",
    "--to",
    "carol@example.com",
    "--subject",
    "s",
    "--text",
    "t",
    "--account",
    "vault",
)


def _needles() -> list[bytes]:
    """The secrets, and the forms they take on the wire (AUTH PLAIN and LOGIN are base64)."""
    plain = [SMTP_PASSWORD, WRONG_PASSWORD, REDIS_PASSWORD, UNSUBSCRIBE_SECRET]
    encoded = [base64.b64encode(p.encode()).decode() for p in plain[:2]]
    encoded += [base64.b64encode(f"\0{USER}\0{p}".encode()).decode() for p in plain[:2]]
    return [n.encode() for n in plain + encoded]


def _fault(command: str, argument: Any, session: RecordingSMTP) -> Reply | None:
    if command == "RCPT" and "nobody" in str(argument):
        return Reply("550 5.1.1 Recipient address rejected: User unknown")
    if command == "DATA" and any("poison" in r for r in session.envelope.rcpt_tos):
        return Reply("554 5.6.0 Message content rejected")
    return None


def _dump(client: redis_lib.Redis) -> bytes:
    """Every key and every value in the Redis, read by type."""
    readers = {
        "string": lambda k: [client.get(k)],
        "hash": lambda k: [x for kv in client.hgetall(k).items() for x in kv],
        "list": lambda k: client.lrange(k, 0, -1),
        "set": lambda k: list(client.smembers(k)),
        "zset": lambda k: client.zrange(k, 0, -1),
    }
    chunks: list[str] = []
    for key in client.scan_iter(count=1000):
        chunks += [key, *map(str, readers[client.type(key)](key))]
    return "\n".join(chunks).encode()


@pytest.fixture
def vault(
    locked_redis_url: str, certificate_dir: Path, ca: Any, environment: dict[str, str]
) -> Iterator[tuple[DevServer, dict[str, str]]]:
    with DevServer(users={USER: SMTP_PASSWORD}, ca=ca, certificate_dir=certificate_dir) as server:
        server.fault = _fault
        env = {
            "REDIS_URL": locked_redis_url,
            "SMTP_URL_VAULT": server.url(USER, SMTP_PASSWORD),
            "SMTP_URL_VAULTBAD": server.url(USER, WRONG_PASSWORD),
        }
        yield server, env


def _wait_states(client: redis_lib.Redis, wanted: dict[str, str]) -> dict[str, str]:
    deadline = time.monotonic() + 40
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen = {j: (status(j, client=client) or {}).get("state", "") for j in wanted}
        if seen == wanted:
            break
        time.sleep(0.2)
    return seen


def _exceptions(env: dict[str, str], ca_file: str) -> str:
    """What a caller or an operator sees when credentials or settings are wrong."""
    texts = []
    environ = {**env, "SMTP_CA_FILE": ca_file, "DEFAULT_FROM_EMAIL": "app@example.com"}
    settings = load_settings(environ)
    texts += [repr(settings), str(settings), repr(settings.account("vault"))]
    texts += [str(settings.account("vault").password)]
    job = build_job(
        settings, {"to": "ann@example.com", "subject": "s", "text": "t", "account": "vaultbad"}
    )
    runtime = Runtime()
    try:
        with pytest.raises(AuthenticationRefused) as refused:
            runtime.deliver(job, settings)
    finally:
        runtime.close()
    texts += [
        str(refused.value),
        repr(refused.value),
        "".join(traceback.format_exception(refused.value)),
    ]
    for broken in (
        f"smtps://{USER}:{SMTP_PASSWORD}@host:notaport",
        f"smtp://{USER}:{SMTP_PASSWORD}@relay:25",
        f"smtps://{USER}:{SMTP_PASSWORD}@host?colour=blue",
    ):
        with pytest.raises(SettingsError) as caught:
            load_settings({"SMTP_URL": broken})
        texts.append("".join(traceback.format_exception(caught.value)))
    return "\n".join(texts)


@pytest.mark.slow
def test_no_password_appears_in_any_output_after_a_send_and_fail_cycle(
    vault: tuple[DevServer, dict[str, str]], tmp_path: Path
) -> None:
    server, env = vault
    sink = SentrySink().start()
    env = {**env, "SENTRY_DSN": sink.dsn}
    send = {"subject": "s", "text": "t"}
    jobs = {
        "sent": {"to": "ann@example.com", "account": "vault", **send},
        "bounced": {"to": "nobody@example.com", "account": "vault", **send},
        "dead": {"to": "poison@example.com", "account": "vault", **send},
        "paused": {"to": "bob@example.com", "account": "vaultbad", **send},
    }
    ids = dict(zip(jobs, send_elsewhere(env, QUEUE, list(jobs.values())), strict=True))
    client = redis_lib.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    log_path = tmp_path / "worker.log"
    outputs: list[str] = []
    with log_path.open("wb") as log, worker_process(QUEUE, env, loglevel="DEBUG", log_file=log):
        expected = {
            ids["sent"]: "sent",
            ids["bounced"]: "failed",
            ids["dead"]: "failed",
            ids["paused"]: "paused",
        }
        assert _wait_states(client, expected) == expected
        commands = [
            *(("status", job_id, "--json") for job_id in ids.values()),
            ("dead", "list", "--json"),
            ("dead", "show", ids["dead"]),
            ("stats", "--json"),
            ("limits", "--json"),
            ("check", "vault", "vaultbad"),
            ("doctor", "--offline", "--json"),
            SEND_COMMAND,
        ]
        for command in commands:
            run = mailworker(*command, env=env)
            outputs += [run.stdout, run.stderr]
        time.sleep(1.0)  # Sentry's transport and the log have flushed
    dead_port = free_port()
    unreachable = {**env, "REDIS_URL": f"redis://mailer:{REDIS_PASSWORD}@127.0.0.1:{dead_port}/0"}
    run = mailworker(*SEND_COMMAND, env={**unreachable, "REDIS_TIMEOUT": "0.5"})
    assert run.returncode == 1 and "Redis" in run.stdout + run.stderr
    outputs += [run.stdout, run.stderr]
    sink.stop()

    assert len(server.messages) == 1  # the CLI's job waits on the email queue, unserved here
    events = sink.events()
    assert {e["tags"]["failure"] for e in events} >= {"bounce", "refused", "paused"}
    log_text = log_path.read_bytes()
    assert b"Connected to redis://mailer:**@" in log_text  # Celery masks it too
    places = {
        "worker log": log_text,
        "sentry": sink.all_bytes(),
        "redis": _dump(client),
        "cli": "\n".join(outputs).encode(),
        "exceptions": _exceptions(env, str(server.ca_file)).encode(),
    }
    client.close()
    for place, text in places.items():
        assert len(text) > 100, place
        for needle in _needles():
            assert needle not in text, f"{needle!r} found in the {place}"


def _dkim_key_body() -> tuple[str, str]:
    """A real RSA key as PEM, and its base64 body alone (a 'bare base64' key)."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    body = "".join(pem.decode().splitlines()[1:-1])
    return pem.decode(), body


def _malformed_settings() -> list[tuple[dict[str, str], list[str], str]]:
    """(environment, secrets that must not show, variable the error must name)."""
    pem, body = _dkim_key_body()
    secret_lines = [body[100:140], body[-80:-40]]  # two pieces of the private key
    cases = []
    for mark, fragments in {
        "/": ("Slash-Kudu", "Tail-Kudu"),
        "#": ("Hash-Lemur", "Tail-Lemur"),
        "?": ("Query-Tapir", "Tail-Tapir"),
    }.items():
        head, tail = fragments
        cases.append(
            (
                {"SMTP_URL_LEAKY": f"smtps://{USER}:{head}{mark}{tail}@smtp.example.com:465"},
                [head, tail],
                "SMTP_URL_LEAKY",
            )
        )
        cases.append(
            (
                {"REDIS_URL": f"redis://mailer:R{head}{mark}R{tail}@127.0.0.1:6379/0"},
                [f"R{head}", f"R{tail}"],
                "REDIS_URL",
            )
        )
    cases.append(
        (
            {"REDIS_URL": "sentinel://:Sentinel-Ibex/Tail-Ibex@127.0.0.1:26379/0?master_name=m"},
            ["Sentinel-Ibex", "Tail-Ibex"],
            "REDIS_URL",
        )
    )
    for key in (f'"{pem}"', f"'{pem}'", body, pem.split("-----END")[0]):
        cases.append(({"DKIM_NEWS": f"d=example.com; s=s1; key={key}"}, secret_lines, "DKIM_NEWS"))
    short = "Short-Secret-Vole-31-bytes-long"
    cases.append(({"UNSUBSCRIBE_SECRET": short}, [short], "UNSUBSCRIBE_SECRET"))
    return cases


def _every_command(tmp_path: Path) -> list[tuple[str, ...]]:
    """Each mailworker command that reads the settings (devserver reads none)."""
    rows = tmp_path / "rows.csv"
    rows.write_text("email\nann@example.com\n")
    text = tmp_path / "body.txt"
    text.write_text("hello")
    return [
        SEND_COMMAND[:-2],
        ("check",),
        ("doctor", "--offline"),
        ("status", "job-1"),
        ("dead", "list"),
        ("dead", "show", "job-1"),
        ("dead", "retry", "job-1"),
        ("dead", "purge", "--yes"),
        ("resume", "default"),
        ("limits",),
        ("stats",),
        ("campaign", "start", str(rows), "--subject", "s", "--text", str(text)),
        ("campaign", "status", "c-1"),
        ("campaign", "pause", "c-1"),
        ("campaign", "resume", "c-1"),
        ("campaign", "cancel", "c-1"),
        ("suppress", "add", "ann@example.com"),
        ("suppress", "remove", "ann@example.com"),
        ("suppress", "check", "ann@example.com"),
        ("suppress", "import", str(rows)),
        ("suppress", "export"),
    ]


_PRODUCER = """
import traceback
from mailworker.tasks import send_email
try:
    send_email.delay(to="ann@example.com", subject="s", text="t")
except Exception as exc:
    print("".join(traceback.format_exception(exc)), repr(exc), str(exc), sep="\\n")
    raise SystemExit(3)
"""


def _producer_failure(env: dict[str, str]) -> str:
    """What ``send_email.delay`` raises in a producer process with ``env``: the exception's
    text, repr and traceback (chained causes included)."""
    run = subprocess.run(
        [sys.executable, "-c", _PRODUCER],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 3, (env, run.stdout, run.stderr)
    return run.stdout + run.stderr


def _in_process(command: tuple[str, ...], env: dict[str, str]) -> tuple[int, str]:
    """Run one command through the real CLI code in this process (fast, for the sweep);
    the settings and the Redis client are read afresh, as in a new process."""
    from click.testing import CliRunner

    from mailworker.cli import main
    from mailworker.settings import get_settings
    from mailworker.store.client import reset_redis

    get_settings.cache_clear()
    reset_redis()
    try:
        result = CliRunner().invoke(main, list(command), env=env)
    finally:
        get_settings.cache_clear()
        reset_redis()
    text = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        text += "Traceback\n" + "".join(traceback.format_exception(result.exception))
    return result.exit_code, text


@pytest.mark.slow
def test_malformed_settings_never_echo_their_secrets(
    environment: dict[str, str], tmp_path: Path
) -> None:
    """Every command (in this process), the commands that used to print a traceback and
    ``send`` (as real processes), and a producer process: the error names the variable and
    says what to do, and no piece of the secret shows anywhere."""
    from mailworker.settings import reload_settings

    commands = _every_command(tmp_path)
    try:
        for env, secrets, variable in _malformed_settings():
            outputs = [_producer_failure(env)]
            for command in commands:
                code, text = _in_process(command, env)
                assert code == 2 and "Traceback" not in text, (command, variable, text[-3000:])
                assert variable in text, (command, text)
                outputs.append(text)
            for command in (("stats",), ("doctor", "--offline"), SEND_COMMAND[:-2]):
                run = mailworker(*command, env=env)
                assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
                outputs.append(run.stdout + run.stderr)
            found = [s for s in secrets if s in "\n".join(outputs)]
            assert not found, f"{found} shown for a malformed {variable}"
    finally:
        reload_settings()


_LEAKY_PRODUCER = """
import sys, sentry_sdk
from mailworker.tasks import QueueUnavailable, send_email
try:
    send_email.delay(to="ann@example.com", subject="s", text="t")  # starts Sentry first
except QueueUnavailable:
    pass  # the Redis is not there; the scrubber knows its password all the same
sentry_sdk.capture_message("leak: " + sys.stdin.read())
sentry_sdk.flush(5)
"""


@pytest.mark.slow
def test_sentry_masks_every_form_of_the_secrets_it_knows(environment: dict[str, str]) -> None:
    """Redis and SMTP passwords as written (percent-encoded) and as used (decoded), the
    DKIM private key whole and line by line, in an event a producer sends."""
    from urllib.parse import quote

    from mailworker.settings.redis_url import sentinel_parts

    pem, body = _dkim_key_body()
    redis_pw, smtp_pw = "Redis/Pw#Okapi?7741", "Smtp:Pw@Marten/3390"
    sink = SentrySink().start()
    env = {
        "SENTRY_DSN": sink.dsn,
        "REDIS_URL": f"redis://mailer:{quote(redis_pw, safe='')}@127.0.0.1:{free_port()}/0",
        "REDIS_TIMEOUT": "0.5",
        "SMTP_URL_ENCODED": f"smtps://{USER}:{quote(smtp_pw, safe='')}@smtp.example.com",
        "DKIM_LEAKY": f"d=leaky.example; s=s1; key={pem}",
    }
    secrets = [
        redis_pw,
        quote(redis_pw, safe=""),
        smtp_pw,
        quote(smtp_pw, safe=""),
        pem,
        body,
        *pem.splitlines()[1:-1],
    ]
    run = subprocess.run(
        [sys.executable, "-c", _LEAKY_PRODUCER],
        input="\n".join(secrets),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    sink.stop()
    assert run.returncode == 0, run.stderr
    sent = sink.all_bytes().decode()
    assert "leak: [secret]" in sent
    found = [s for s in secrets if s in sent]
    assert not found, f"{len(found)} secret(s) reached Sentry, e.g. {found[0][:20]!r}..."

    sentinel = sentinel_parts(
        f"sentinel://:{quote(redis_pw, safe='')}@127.0.0.1:26379;sentinel://h2:26379/0"
        "?master_name=m"
    )
    assert sentinel.password == redis_pw
    assert "Okapi" not in repr(sentinel) and "Okapi" not in str(sentinel)
