"""Cluster-wide limits: real Redis, real worker processes, a server that timestamps each message."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from mailworker.delivery.ratelimit import RateLimiter, slow_down, usage
from mailworker.delivery.slots import slots_in_use
from mailworker.dev.devserver import DevServer, RecordingSMTP, Reply
from mailworker.settings import SettingsError, load_settings, reload_settings
from mailworker.store.lifecycle import due_at, end_waiting
from mailworker.tasks import status
from tests.helpers import extra_account, send_many, wait_all_sent, wait_for_status, worker_process


def most_in_any_window(times: list[float], seconds: float) -> int:
    """The largest number of timestamps inside any half-open interval of ``seconds``."""
    times, best, start = sorted(times), 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


@contextmanager
def three_workers(queue: str, env: dict[str, str]) -> Iterator[None]:
    """Three ``celery worker`` processes on ``queue``, as on three machines."""
    with ExitStack() as workers:
        for name in "abc":
            workers.enter_context(worker_process(queue, env, name=name))
        yield


def once_each(server: DevServer) -> Counter[str]:
    return Counter(str(m.message["Message-ID"]) for m in server.messages)


# -- the syntax ---------------------------------------------------------------------------


def test_limits_are_read_from_the_account_url() -> None:
    account = load_settings(
        {"SMTP_URL": "smtps://u:p@h?rate=14/s,50000/d&rate.Gmail.com=20/s&cluster_connections=3"}
    ).account("default")
    assert [str(r) for r in account.limits.rates] == ["14/s", "50000/d"]
    assert [str(r) for r in account.limits.for_domain("gmail.com")] == ["20/s"]
    assert account.limits.cluster_connections == 3


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("rate=20", "N/s, N/m, N/h or N/d"),
        ("rate=20/w", "N/s, N/m, N/h or N/d"),
        ("rate=0/s", "at least 1"),
        ("rate=1/s,2/s", "one limit per unit"),
        ("rate.=1/s", "rate.<domain>"),
        ("cluster_connections=0", "whole number"),
        ("ratee=1/s", "unknown query parameter"),
    ],
)
def test_bad_limits_name_the_variable(query: str, words: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({"SMTP_URL_BULK": f"smtps://u:p@h?{query}"})
    assert error.value.variable == "SMTP_URL_BULK" and words in str(error.value)


# -- the limiter against Redis ------------------------------------------------------------


def _account(name: str, query: str) -> Any:
    return load_settings({f"SMTP_URL_{name.upper()}": f"smtps://u:p@h?{query}"}).account(name)


def test_every_window_must_allow_and_a_refusal_takes_nothing(environment: dict[str, str]) -> None:
    account = _account("windows", "rate=3/h,4/d&rate.gmail.com=1/h")
    to_gmail = RateLimiter(account, ["gmail.com"], cooldown=60)
    elsewhere = RateLimiter(account, ["example.com"], cooldown=60)
    assert to_gmail.acquire().granted
    refused = to_gmail.acquire()
    assert not refused.granted and refused.blocked_by == "gmail.com 1/h"
    assert 3600 <= refused.wait <= 3600 * 1.02 + 1  # the sliding window errs by T/50 at most
    assert [elsewhere.acquire().granted for _ in range(3)] == [True, True, False]
    assert elsewhere.acquire().blocked_by == "3/h"
    _, windows = usage(account, cooldown=60)
    assert {w.label: w.used for w in windows} == {"3/h": 3, "4/d": 3, "gmail.com 1/h": 1}


def test_rates_are_paced_evenly_with_small_bursts(environment: dict[str, str]) -> None:
    account = _account("paced", "rate=20/s&rate.gmail.com=10/s")
    limiter = RateLimiter(account, ["example.com"], cooldown=60)
    # 20/s: one every 50 ms, two back to back at most.
    assert [limiter.acquire().granted for _ in range(3)] == [True, True, False]
    assert 0.04 <= limiter.acquire().wait <= 0.1
    to_gmail = RateLimiter(account, ["gmail.com"], cooldown=60)
    time.sleep(0.1)
    assert to_gmail.acquire().granted
    refused = to_gmail.acquire()
    assert refused.blocked_by == "gmail.com 10/s" and 0.05 <= refused.wait <= 0.1


def test_a_throttle_halves_the_rate_and_each_cooldown_doubles_it_back(
    environment: dict[str, str],
) -> None:
    account = _account("adaptive", "rate=40/s,1000/d")
    assert slow_down("adaptive", cooldown=0.4) == 0.5
    assert slow_down("adaptive", cooldown=0.4) == 0.5  # one cut per half cool-down
    time.sleep(0.21)
    assert slow_down("adaptive", cooldown=0.4) == 0.25
    factor, windows = usage(account, cooldown=0.4)
    assert factor == 0.25
    assert {w.label: w.effective_limit for w in windows} == {"40/s": 10, "1000/d": 1000}
    time.sleep(0.85)
    assert usage(account, cooldown=0.4)[0] == 1.0


# -- with workers -------------------------------------------------------------------------


@pytest.mark.slow
def test_twenty_per_second_across_three_worker_processes(
    server: DevServer, environment: dict[str, str]
) -> None:
    url = server.url() + "?rate=20/s"
    with extra_account("paced", url):
        job_ids = send_many(600, "paced", queue="rate-test")
        with three_workers("rate-test", {"SMTP_URL_PACED": url}):
            wait_all_sent(job_ids, timeout=90)
    times = [m.received_at for m in server.messages]
    assert len(once_each(server)) == 600 and len(times) == 600
    # The limiter grants at most 20 in any second, spread evenly with bursts of ceil(20/10);
    # arrival times at the server add network and server jitter, bounded here by the burst.
    assert most_in_any_window(times, 1.0) <= 20 + 2
    # 600 messages at 20/s: 30 one-second windows; the first starts with the first message.
    assert 27 <= max(times) - min(times) + 1 <= 33


@pytest.mark.slow
def test_two_connections_across_three_processes_of_four(
    server: DevServer, environment: dict[str, str]
) -> None:
    url = server.url() + "?cluster_connections=2&max_connections=4"
    with extra_account("capped", url):
        job_ids = send_many(300, "capped", queue="cap-test")
        with three_workers("cap-test", {"SMTP_URL_CAPPED": url}):
            wait_all_sent(job_ids, timeout=90)
    assert server.log.max_concurrent <= 2
    assert len(once_each(server)) == 300 and set(once_each(server).values()) == {1}


def test_a_daily_quota_defers_the_rest_to_the_next_window(
    server: DevServer, environment: dict[str, str], celery_worker: Any
) -> None:
    with extra_account("daily", server.url() + "?rate=50/d"):
        job_ids = send_many(80, "daily")
        records = {j: wait_for_status(j, "sent", "deferred") for j in job_ids}
    try:
        time.sleep(1)  # nothing more goes out early
        assert len(server.messages) == 50
        deferred = [j for j, r in records.items() if r["state"] == "deferred"]
        assert len(deferred) == 30
        tomorrow = time.time() + 86400
        for job_id in deferred:
            record = status(job_id)
            assert record is not None
            assert "rate limit 50/d" in record["error"]
            assert record["attempt"] == 1  # waiting for quota is not a failed attempt
            # The next window opens a day after the first sends (within one 1/50 bucket).
            assert tomorrow - 1800 < float(record["next_attempt_at"]) < tomorrow + 1800
            assert due_at(job_id) == pytest.approx(float(record["next_attempt_at"]))
    finally:
        for job_id in job_ids:
            end_waiting(job_id, "cancelled", "test over")


@pytest.mark.slow
def test_throttling_replies_slow_the_account_down_and_nothing_is_lost(
    server: DevServer, environment: dict[str, str], celery_worker: Any
) -> None:
    throttled: list[float] = []
    data_commands = iter(range(1, 10_000))
    lock = threading.Lock()

    def every_fifth_of_the_first_thirty(command: str, _arg: Any, _s: RecordingSMTP) -> Reply | None:
        if command != "DATA":
            return None
        with lock:
            n = next(data_commands)
        if n % 5 == 0 and n <= 30:
            throttled.append(time.time())
            return Reply("421 4.7.0 Try again later, closing connection", close=True)
        return None

    server.fault = every_fifth_of_the_first_thirty
    url = server.url() + "?rate=40/s"
    with extra_account("throttled", url):
        account = reload_settings().account("throttled")
        job_ids = send_many(80, "throttled")
        factors = []
        while len(server.messages) < 80 and len(factors) < 1200:
            factors.append(usage(account, cooldown=1)[0])
            time.sleep(0.05)
        wait_all_sent(job_ids, timeout=60)
    assert len(throttled) == 6
    assert len(once_each(server)) == 80 and set(once_each(server).values()) == {1}
    first = throttled[0]
    after = [m.received_at for m in server.messages if first + 0.05 < m.received_at < first + 1]
    assert len(after) <= 20  # 40/s halved: at most 20 in the second after the first throttle
    assert min(factors) <= 0.25  # cut twice at least, once per half cool-down at most
    time.sleep(4.5)  # four cool-downs without a throttle: 1/16 back to the full rate
    assert usage(account, cooldown=1)[0] == 1.0


@pytest.mark.slow
def test_a_killed_workers_connection_slot_comes_back_within_the_lease(
    server: DevServer, environment: dict[str, str]
) -> None:
    url = server.url() + "?cluster_connections=1"
    lease = float(environment["CONNECTION_LEASE_SECONDS"])
    with extra_account("leased", url):
        first = send_many(1, "leased", queue="lease-test")
        with worker_process("lease-test", {"SMTP_URL_LEASED": url}) as worker:
            wait_all_sent(first)
            time.sleep(lease)  # renewed: the idle session still holds its slot
            assert slots_in_use("leased") == (1, 0)
            worker.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            worker.wait(10)
        while slots_in_use("leased")[0] and time.monotonic() < killed + lease + 5:
            time.sleep(0.05)
        assert time.monotonic() - killed <= lease + 0.2
        second = send_many(1, "leased", queue="lease-test")
        with worker_process("lease-test", {"SMTP_URL_LEASED": url}):
            wait_all_sent(second)
    assert len(server.messages) == 2
