"""Classification and backoff: pure functions, tested alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from settings import RetryPolicy
from worker.classify import Decision, classify_error, classify_reply, enhanced_code, retry_hint
from worker.errors import AuthenticationRefused, TransientFailure
from worker.retry import compute_backoff, next_retry_at


@pytest.mark.parametrize(
    ("code", "reply", "stage", "decision"),
    [
        (250, "2.0.0 Ok", "data", Decision.DELIVERED),
        (421, "4.7.0 Try again later", "data", Decision.TRANSIENT),
        (450, "4.2.1 Mailbox busy", "rcpt", Decision.TRANSIENT),
        (451, "4.3.0 Local error", "data", Decision.TRANSIENT),
        (452, "4.5.3 Too many recipients", "rcpt", Decision.TRANSIENT),
        (
            454,
            "4.7.0 Throttling failure: Maximum sending rate exceeded",
            "data",
            Decision.TRANSIENT,
        ),
        (
            550,
            "5.1.1 <x@example.com>: Recipient address rejected: User unknown",
            "rcpt",
            Decision.BOUNCE,
        ),
        (550, "No such user here", "rcpt", Decision.BOUNCE),
        (553, "5.1.3 Bad recipient address syntax", "rcpt", Decision.BOUNCE),
        (535, "5.7.8 Authentication credentials invalid", "data", Decision.ACCOUNT),
        (
            535,
            "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled",
            "data",
            Decision.ACCOUNT,
        ),
        (550, "5.7.30 Basic authentication is not supported", "data", Decision.ACCOUNT),
        (554, "Message rejected: Daily quota exceeded", "data", Decision.ACCOUNT),
        (550, "5.4.5 Daily user sending quota exceeded", "data", Decision.ACCOUNT),
        (554, "5.6.0 Message content rejected", "data", Decision.INVALID_MESSAGE),
        (552, "5.3.4 Message size exceeds fixed limit", "data", Decision.INVALID_MESSAGE),
    ],
)
def test_replies_are_classified(code: int, reply: str, stage: str, decision: Decision) -> None:
    assert classify_reply(code, reply, stage=stage).decision is decision


def test_enhanced_codes_and_retry_hints_are_read_from_the_text() -> None:
    assert enhanced_code("5.1.1 User unknown") == "5.1.1"
    assert enhanced_code("User unknown") is None
    assert retry_hint("4.7.0 Too many connections, try again in 30 seconds") == 30
    assert retry_hint("421 please retry after 2 minutes") == 120
    assert classify_reply(451, "4.7.1 try again in 90 s").retry_after == 90


def test_errors_without_a_reply_are_transient_and_auth_errors_pause() -> None:
    assert classify_error(TransientFailure("a", "dropped")).decision is Decision.TRANSIENT
    refused = AuthenticationRefused("a", "no", code=535, reply="5.7.8 nope")
    assert classify_error(refused).decision is Decision.ACCOUNT


POLICY = RetryPolicy(base_delay=30, max_delay=3600, max_attempts=10, max_age=86400)


@given(attempt=st.integers(1, 60), draw=st.floats(0, 1))
def test_backoff_grows_and_stays_within_bounds(attempt: int, draw: float) -> None:
    delay = compute_backoff(attempt, POLICY, rand=lambda: draw)
    step = min(POLICY.max_delay, POLICY.base_delay * 2 ** (attempt - 1))
    assert step / 2 <= delay <= step <= POLICY.max_delay


def test_retries_stop_at_max_attempts_and_max_age_and_honour_hints() -> None:
    now = 1_000_000.0
    assert next_retry_at(10, now, POLICY, now=now) is None
    assert next_retry_at(3, now - 86_390, POLICY, now=now) is None  # would pass max_age
    due = next_retry_at(1, now, POLICY, hint=600, now=now)
    assert due is not None and due - now == 600


@pytest.mark.parametrize(
    ("code", "reply", "throttled"),
    [
        (421, "4.7.0 Try again later, closing connection. (Gmail)", True),
        (450, "4.2.1 The user you are trying to contact is receiving mail too quickly", True),
        (432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", True),
        (454, "Throttling failure: Maximum sending rate exceeded.", True),
        (451, "Rate limit exceeded, slow down", True),
        (421, "4.4.2 Idle timeout, closing connection", False),
        (451, "4.3.0 Local error in processing", False),
        (550, "5.7.0 Too many messages? No: a permanent refusal", False),
    ],
)
def test_throttling_replies_are_recognised(code: int, reply: str, throttled: bool) -> None:
    verdict = classify_reply(code, reply)
    assert verdict.throttled is throttled
    if throttled:
        assert verdict.decision is Decision.TRANSIENT
