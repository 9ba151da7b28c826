"""Classification and backoff: pure functions, tested alone."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailworker.delivery.classify import (
    Decision,
    Stage,
    account_advice,
    classify_error,
    classify_reply,
    enhanced_code,
    retry_hint,
)
from mailworker.delivery.errors import AuthenticationRefused, TransientFailure
from mailworker.delivery.outcome import plan
from mailworker.delivery.retry import compute_backoff, next_retry_at
from mailworker.settings import RetryPolicy

CORPUS = Path(__file__).parent / "corpus" / "smtp_replies.csv"
with CORPUS.open(newline="", encoding="utf-8") as corpus:
    _ROWS = list(csv.DictReader(corpus))


def test_the_corpus_is_big_and_covers_every_stage_and_decision() -> None:
    assert len(_ROWS) >= 150
    assert {row["stage"] for row in _ROWS} == {stage.value for stage in Stage}
    assert {row["decision"] for row in _ROWS} == {decision.value for decision in Decision}
    assert all(row["source"].startswith(("https://", "http://")) for row in _ROWS)


@pytest.mark.parametrize(
    "row", _ROWS, ids=[f"{n}-{r['stage']}-{r['code']}" for n, r in enumerate(_ROWS, 2)]
)
def test_every_real_reply_in_the_corpus_gets_its_decision(row: dict[str, str]) -> None:
    verdict = classify_reply(int(row["code"]), row["reply"], stage=row["stage"])
    assert verdict.decision.value == row["decision"], row["source"]


@pytest.mark.parametrize(
    ("code", "reply", "stage", "decision"),
    [
        (250, "2.0.0 Ok", "data", Decision.DELIVERED),
        (421, "4.7.0 Try again later", "end_of_data", Decision.THROTTLE),
        (450, "4.2.1 Mailbox busy", "rcpt", Decision.TRANSIENT),
        (451, "4.3.0 Local error", "data", Decision.TRANSIENT),
        (452, "4.5.3 Too many recipients", "rcpt", Decision.TOO_MANY_RECIPIENTS),
        (
            454,
            "4.7.0 Throttling failure: Maximum sending rate exceeded",
            "end_of_data",
            Decision.THROTTLE,
        ),
        (
            550,
            "5.1.1 <x@example.com>: Recipient address rejected: User unknown",
            "rcpt",
            Decision.UNKNOWN_RECIPIENT,
        ),
        (550, "No such user here", "rcpt", Decision.UNKNOWN_RECIPIENT),
        (553, "5.1.3 Bad recipient address syntax", "rcpt", Decision.REFUSED),
        (535, "5.7.8 Authentication credentials invalid", "auth", Decision.ACCOUNT),
        (
            535,
            "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled",
            "auth",
            Decision.ACCOUNT,
        ),
        (550, "5.7.30 Basic authentication is not supported", "mail", Decision.ACCOUNT),
        (554, "Message rejected: Daily quota exceeded", "end_of_data", Decision.ACCOUNT),
        (550, "5.4.5 Daily user sending quota exceeded", "end_of_data", Decision.ACCOUNT),
        (554, "5.6.0 Message content rejected", "end_of_data", Decision.REFUSED),
        (552, "5.3.4 Message size exceeds fixed limit", "end_of_data", Decision.REFUSED),
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
        # One recipient receiving too fast: retry that one later, do not slow everyone down.
        (450, "4.2.1 The user you are trying to contact is receiving mail too quickly", False),
        (421, "4.7.28 Our system has detected an unusual rate of unsolicited mail", True),
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
    assert (verdict.decision is Decision.THROTTLE) is throttled


# Words real replies carry, including every text signal the classifier knows: a property
# draws replies from them so that no signal can sneak a suppression or a pause through.
_SIGNALS = [
    "user unknown",
    "no such user",
    "mailbox not found",
    "does not exist",
    "recipient not found",
    "recipient address rejected",
    "mailbox full",
    "over quota",
    "quota exceeded",
    "sender address rejected: not owned by user",
    "relay access denied",
    "blocked using zen.spamhaus.org",
    "too many recipients",
    "daily sending quota exceeded",
    "greylisted",
    "throttling",
]
_FILLER = st.text(alphabet="0123456789<>@.-:;[]() ", max_size=20)
_TEXT = st.lists(st.one_of(st.sampled_from(_SIGNALS), _FILLER), max_size=5).map(" ".join)
_ANY_STAGE = st.sampled_from(list(Stage))


@given(
    code=st.sampled_from([450, 451, 452, 550, 551, 552, 553, 554]),
    klass=st.sampled_from(["4", "5"]),
    subject=st.sampled_from(["3", "5", "7"]),
    detail=st.integers(0, 999),
    text=_TEXT,
)
def test_no_policy_protocol_or_system_code_at_rcpt_ever_suppresses(
    code: int, klass: str, subject: str, detail: int, text: str
) -> None:
    verdict = classify_reply(code, f"{klass}.{subject}.{detail} {text}", stage=Stage.RCPT)
    assert verdict.decision is not Decision.UNKNOWN_RECIPIENT
    assert not plan(verdict).suppress


@given(
    stage=st.sampled_from([s for s in Stage if s is not Stage.RCPT]),
    code=st.integers(200, 599),
    enhanced=st.one_of(st.none(), st.sampled_from(["5.1.1", "5.1.10", "5.2.1", "5.0.0"])),
    text=_TEXT,
)
def test_no_reply_outside_rcpt_ever_suppresses(
    stage: Stage, code: int, enhanced: str | None, text: str
) -> None:
    reply = f"{enhanced} {text}" if enhanced else text
    assert not plan(classify_reply(code, reply, stage=stage)).suppress


_RECIPIENT_WORDS = ["user unknown", "mailbox full", "over quota", "mailbox unavailable", "busy"]


@given(
    code=st.sampled_from([450, 451, 452, 550, 551, 552, 553, 554]),
    enhanced=st.sampled_from(["5.1.1", "5.1.10", "5.2.1", "5.2.2", "4.2.2", "4.2.0", "5.1.6"]),
    words=st.lists(st.one_of(st.sampled_from(_RECIPIENT_WORDS), _FILLER), max_size=4),
)
def test_a_recipient_level_reply_never_pauses_the_account(
    code: int, enhanced: str, words: list[str]
) -> None:
    if code // 100 != int(enhanced[0]):
        enhanced = f"{code // 100}{enhanced[1:]}"
    verdict = classify_reply(code, f"{enhanced} {' '.join(words)}", stage=Stage.RCPT)
    assert not plan(verdict).pause_account
    assert verdict.decision is not Decision.ACCOUNT


@given(stage=_ANY_STAGE, code=st.integers(200, 599), text=_TEXT)
def test_every_reply_gets_exactly_one_decision_and_a_plan(
    stage: Stage, code: int, text: str
) -> None:
    verdict = classify_reply(code, text, stage=stage)
    chosen = plan(verdict)
    assert chosen.pause_account == (verdict.decision is Decision.ACCOUNT)
    assert chosen.suppress == (verdict.decision is Decision.UNKNOWN_RECIPIENT)
    if verdict.decision is Decision.ACCOUNT:
        assert account_advice(verdict, "acct", "SMTP_URL_ACCT")


@pytest.mark.parametrize(
    ("reply", "cause"),
    [
        ("5.7.8 Username and Password not accepted", "credentials"),
        ("5.7.1 <app@example.com>: Sender address rejected: not owned by user u", "sender"),
        ("5.7.1 <x@example.net>: Relay access denied", "relay"),
        (
            "5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
            "blocked",
        ),
        ("5.4.5 Daily user sending quota exceeded", "quota"),
    ],
)
def test_account_refusals_name_the_fix(reply: str, cause: str) -> None:
    verdict = classify_reply(554 if "blocked" in reply else 550, reply, stage=Stage.RCPT)
    if cause == "credentials":
        verdict = classify_reply(535, reply, stage=Stage.AUTH)
    assert verdict.decision is Decision.ACCOUNT and verdict.cause == cause
    assert "mailworker" in account_advice(verdict, "acct", "SMTP_URL_ACCT") or cause == "blocked"
