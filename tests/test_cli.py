"""The mailworker command line, run as a real subprocess against the test servers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import PASSWORD
from tests.helpers import wait_for_status


def mailworker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailworker.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_succeeds_against_the_test_server(environment: dict[str, str]) -> None:
    run = mailworker("check", "default", "implicit", env=environment)
    assert run.returncode == 0, run.stderr
    assert "default" in run.stdout and "ok" in run.stdout
    assert "TLSv1.3" in run.stdout or "TLSv1.2" in run.stdout
    assert "PLAIN" in run.stdout and "expires" in run.stdout
    assert PASSWORD not in run.stdout + run.stderr


def test_check_with_a_wrong_password_gives_advice(environment: dict[str, str]) -> None:
    run = mailworker("check", "badpass", env=environment)
    assert run.returncode == 1
    assert "535" in run.stdout and "SMTP_URL_BADPASS" in run.stdout
    assert "wrong-password" not in run.stdout + run.stderr


def test_check_without_starttls_explains_the_port(environment: dict[str, str]) -> None:
    run = mailworker("check", "notls", env=environment)
    assert run.returncode == 1 and "without STARTTLS" in run.stdout


@pytest.mark.usefixtures("celery_worker")
def test_send_prints_a_job_id_that_gets_delivered(environment: dict[str, str]) -> None:
    run = mailworker(
        "send", "--to", "ann@example.com", "--subject", "CLI", "--text", "hi", env=environment
    )
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()
    wait_for_status(job_id, "sent")
    shown = mailworker("status", job_id, env={**environment, "COLUMNS": "200"})
    assert "sent" in shown.stdout
    # Times a reader can place, not epoch floats; --json keeps the numbers.
    assert re.search(r"updated_at +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, \d+ s ago", shown.stdout)
    assert not re.search(r"\b1\d{9}\.\d+", shown.stdout), shown.stdout
    record = json.loads(mailworker("status", job_id, "--json", env=environment).stdout)
    assert float(record["updated_at"]) <= time.time()


def test_send_with_bad_input_exits_2_with_the_reason(environment: dict[str, str]) -> None:
    run = mailworker("send", "--to", "nobody", "--subject", "x", "--text", "x", env=environment)
    assert run.returncode == 2 and "to:" in run.stderr


def test_help_reads_well() -> None:
    run = mailworker("--help", env={})
    assert run.returncode == 0
    for command in ("send", "check", "status", "devserver", "demo"):
        assert command in run.stdout


def test_limits_shows_configured_limits_and_current_usage(environment: dict[str, str]) -> None:
    from mailworker.delivery.ratelimit import RateLimiter
    from mailworker.settings import load_settings

    url = environment["SMTP_URL"] + "?rate=20/m,500/d&cluster_connections=2"
    account = load_settings({**environment, "SMTP_URL_LIMITED": url}).account("limited")
    assert RateLimiter(account, ["example.com"], cooldown=60).acquire().granted
    run = mailworker("limits", "limited", env={"SMTP_URL_LIMITED": url})
    assert run.returncode == 0, run.stderr
    assert "500/d" in run.stdout and "1 / 500" in run.stdout and "0 / 2" in run.stdout
    run = mailworker("limits", "limited", "--json", env={"SMTP_URL_LIMITED": url})
    (report,) = json.loads(run.stdout)
    assert report["connections"] == {"cap": 2, "held": 0, "waiting": 0}
    assert [(w["label"], w["used"]) for w in report["windows"]] == [("20/m", 1), ("500/d", 1)]
    assert PASSWORD not in run.stdout + run.stderr


def test_a_missing_redis_gets_advice_not_a_traceback(environment: dict[str, str]) -> None:
    run = mailworker("status", "some-job", env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert run.returncode == 1
    assert "REDIS_URL" in run.stderr and "Traceback" not in run.stderr


def test_suppress_add_check_export_import_remove(
    environment: dict[str, str], tmp_path: pytest.TempPathFactory
) -> None:
    assert mailworker("suppress", "add", "Zed@Example.com", env={}).returncode == 0
    check = mailworker("suppress", "check", "zed@example.com", "amy@example.com", env={})
    assert check.returncode == 1 and "zed@example.com: suppressed" in check.stdout
    assert "amy@example.com: ok" in check.stdout
    export = mailworker("suppress", "export", env={})
    assert "zed@example.com,added by an operator" in export.stdout
    listing = tmp_path / "list.csv"  # type: ignore[operator]
    listing.write_text("email,name\nyan@example.com,Yan\nxia@example.com,Xia\n")
    assert "suppressed 2" in mailworker("suppress", "import", str(listing), env={}).stdout
    removed = mailworker("suppress", "remove", "zed@example.com", "yan@example.com", env={})
    assert "removed 2" in removed.stdout
    assert mailworker("suppress", "check", "zed@example.com", env={}).returncode == 0


def test_doctor_runs_every_check_and_says_what_to_do(environment: dict[str, str]) -> None:
    run = mailworker("doctor", "--offline", env={})
    assert run.returncode == 1  # the test environment has broken accounts on purpose
    assert "redis" in run.stdout and "Redis 7" in run.stdout
    assert "account default" in run.stdout and "account badpass" in run.stdout
    assert "SMTP_URL_BADPASS" in run.stdout  # the advice names the variable to fix
    assert "skipped (--offline)" in run.stdout
    report = json.loads(mailworker("doctor", "--offline", "--json", env={}).stdout)
    by_check = {finding["check"]: finding for finding in report}
    assert by_check["redis"]["ok"] is True and by_check["account default"]["ok"] is True
    assert by_check["account badpass"]["ok"] is False
    assert PASSWORD not in run.stdout + run.stderr


def test_stats_counts_outcomes_across_workers(
    environment: dict[str, str], celery_worker: object
) -> None:
    from mailworker.tasks import send_email

    before = json.loads(mailworker("stats", "--json", env={}).stdout)["accounts"]["implicit"]
    job_ids = [
        send_email.delay(to=f"stat{i}@example.com", subject="s", text="t", account="implicit").id
        for i in range(3)
    ]
    for job_id in job_ids:
        wait_for_status(job_id, "sent")
    report = json.loads(mailworker("stats", "--json", env={}).stdout)
    assert report["accounts"]["implicit"]["sent"] == before["sent"] + 3
    assert set(report) == {"accounts", "queued", "deferred", "dead", "last_24h"}
    # The last 24 hours' recipients sent, for the bounce and complaint rates.
    assert report["last_24h"]["implicit"]["sent"] >= 3
    table = mailworker("stats", env={})
    assert table.returncode == 0 and "implicit" in table.stdout and "suppressed" in table.stdout
    assert "complaint" in table.stdout and "last 24 hours" in table.stdout


@pytest.mark.usefixtures("celery_worker")
def test_json_output_for_scripts(environment: dict[str, str]) -> None:
    """Every command a script would call speaks JSON on request, with the same exit codes."""
    sent = mailworker(
        "send", "--to", "ann@example.com", "--subject", "J", "--text", "x", "--json", env={}
    )
    assert sent.returncode == 0, sent.stderr
    job_id = json.loads(sent.stdout)["job_id"]
    assert wait_for_status(job_id, "sent")["state"] == "sent"

    checked = mailworker("check", "default", "badpass", "--json", env={})
    assert checked.returncode == 1  # one account is broken: the exit code still says so
    reports = {r["account"]: r for r in json.loads(checked.stdout)}
    assert reports["default"]["ok"] and reports["default"]["tls_version"].startswith("TLSv1.")
    assert not reports["badpass"]["ok"] and "535" in reports["badpass"]["error"]
    assert PASSWORD not in checked.stdout and "wrong-password" not in checked.stdout

    assert mailworker("suppress", "add", "gone@example.com", env={}).returncode == 0
    suppressed = mailworker(
        "suppress", "check", "gone@example.com", "ann@example.com", "--json", env={}
    )
    assert suppressed.returncode == 1
    assert [(x["address"], x["suppressed"]) for x in json.loads(suppressed.stdout)] == [
        ("gone@example.com", True),
        ("ann@example.com", False),
    ]
    missing = mailworker("campaign", "pause", "no-such-campaign", "--json", env={})
    assert missing.returncode == 1 and "no campaign" in missing.stderr


def test_the_demo_delivers_and_prints_no_warning() -> None:
    """`make demo` as a newcomer sees it: its own Redis (nothing answers at REDIS_URL here),
    its own TLS + AUTH server, a worker; no deprecation or other warning on the way."""
    run = mailworker("demo", "--count", "2", env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "All 2 messages delivered" in output
    assert not re.search(r"warn|deprecat", output, re.IGNORECASE), output
