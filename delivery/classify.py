"""Turn every SMTP reply into one decision: the single place that reads reply codes.

Inputs are the stage the reply answered (:class:`Stage`), the basic code, the enhanced
status code (RFC 3463: ``X.Y.Z`` at the start of the text, or qmail's ``(#X.Y.Z)``) and known
provider texts. Outputs (:class:`Decision`), and what the worker does with each
(:mod:`worker.outcome` turns them into actions):

    delivered            250                                      mark sent
    unknown_recipient    5.1.1, 5.1.10, 5.2.1, "user unknown" (RCPT only)
                                                                  fail that recipient, suppress it
    mailbox_full         5.2.2 / 4.2.2, "over quota"              retry with backoff, then fail it;
                                                                  never suppress, never pause
    refused              content, spam, size, DMARC, a policy     fail the message (at RCPT: for
                         refusal of this message or recipient     that recipient); suppress nobody
    account              AUTH, sender not owned, relay denied,    pause the account; suppress
                         client IP blocked, sending quota         nobody; the mail waits
    throttle             "slow down": 421 4.7.0, 4.7.28, 4.3.2    slow the account down, retry
    too_many_recipients  452 4.5.3, 552 5.5.3 at RCPT             the rest in another transaction
    transient            any other 4xx, timeouts, dropped links   retry with backoff

Only ``unknown_recipient`` suppresses an address, and only a RCPT reply can be one: a reply
at MAIL, DATA or AUTH, and a RCPT reply whose enhanced code is not of class 5.1 or 5.2.1
(5.7.x policy, 5.5.x protocol, 5.3.x system, 5.4.x routing), never does. When in doubt the
answer is ``refused`` or ``transient``: a wrong suppression loses mail silently, a wrong
retry costs a few attempts. The corpus in ``tests/corpus/smtp_replies.csv`` is the
specification: every row is a real reply with its stage, source and expected decision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from mailworker.delivery import reply_texts as texts
from mailworker.delivery.errors import AccountProblem, DeliveryError
from mailworker.delivery.stage import Stage


class Decision(Enum):
    DELIVERED = "delivered"
    UNKNOWN_RECIPIENT = "unknown_recipient"
    MAILBOX_FULL = "mailbox_full"
    REFUSED = "refused"
    ACCOUNT = "account"
    THROTTLE = "throttle"
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    TRANSIENT = "transient"


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    code: int | None = None
    enhanced: str | None = None
    retry_after: float | None = None
    cause: str | None = None  # for ``account``: what to fix (see ACCOUNT_ADVICE)

    @property
    def throttled(self) -> bool:
        return self.decision is Decision.THROTTLE


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_QMAIL_ENHANCED = re.compile(r"\(#([245])\.(\d{1,3})\.(\d{1,3})\)")
_RETRY_HINT = re.compile(
    r"(?:try again|retry)\s+(?:later\s+)?(?:in|after)\s+(\d+)\s*(s|sec|second|seconds|m|min|"
    r"minute|minutes|h|hour|hours)\b",
    re.IGNORECASE,
)
_UNITS = {"s": 1, "m": 60, "h": 3600}


def enhanced_code(reply: str) -> str | None:
    match = _ENHANCED.match(reply or "") or _QMAIL_ENHANCED.search(reply or "")
    return ".".join(match.groups()) if match else None


def retry_hint(reply: str) -> float | None:
    match = _RETRY_HINT.search(reply or "")
    if not match:
        return None
    return float(match.group(1)) * _UNITS[match.group(2)[0].lower()]


def classify_reply(code: int, reply: str, *, stage: Stage | str = Stage.END_OF_DATA) -> Verdict:
    """The decision for ``code reply`` answered at ``stage``."""
    stage = Stage(stage)
    enhanced = enhanced_code(reply)
    text = (reply or "").lower()
    decision = _decide(code, text, enhanced, stage)
    cause = _account_cause(code, text, enhanced) if decision is Decision.ACCOUNT else None
    return Verdict(decision, code, enhanced, retry_hint(reply), cause)


# What an operator should do about an account-level refusal, by cause.
ACCOUNT_ADVICE = {
    "credentials": "the server refused the login: fix the user name, password or token in "
    "{variable}, then run `mailworker resume {account}`",
    "sender": "the server refuses the From address for this login: send from an address the "
    "account owns (DEFAULT_FROM_EMAIL or from_email=), then `mailworker resume {account}`",
    "relay": "the server will not relay for this client: check that {variable} points at the "
    "provider's submission host and that AUTH succeeds, then `mailworker resume {account}`",
    "blocked": "the server blocks this machine's IP address (a blocklist or reputation): ask "
    "the provider to delist it or send through another account",
    "quota": "the provider's sending quota is used up: wait for it to reset or raise it; "
    "`mailworker resume {account}` once it has",
    "setup": "the server refused the session itself (TLS, EHLO or the account's state): run "
    "`mailworker check {account}` and `mailworker doctor`",
}


def account_advice(verdict: Verdict, account: str, variable: str = "SMTP_URL") -> str:
    """One sentence that names the fix for an account-level refusal."""
    template = ACCOUNT_ADVICE.get(verdict.cause or "setup", ACCOUNT_ADVICE["setup"])
    return template.format(account=account, variable=variable)


def classify_error(error: DeliveryError) -> Verdict:
    """A whole-message failure raised by the delivery pipeline."""
    if error.code is None:
        if isinstance(error, AccountProblem):  # no STARTTLS, certificate, refusing AUTH
            return Verdict(Decision.ACCOUNT)
        return Verdict(Decision.TRANSIENT)  # timeouts, dropped connections, TLS hiccups
    verdict = classify_reply(error.code, error.reply, stage=error.stage)
    if isinstance(error, AccountProblem) and verdict.decision is not Decision.ACCOUNT:
        return Verdict(Decision.ACCOUNT, verdict.code, verdict.enhanced, verdict.retry_after)
    return verdict


def ends_session(code: int | None) -> bool:
    """A reply after which the server closes the channel (RFC 5321 4.2.2: 421)."""
    return code == 421


def is_stale_session(verdict: Verdict) -> bool:
    """Did a reused session die of old age (send again at once), not of the server's will?"""
    if verdict.decision is not Decision.TRANSIENT:
        return False
    return verdict.code is None or (verdict.code == 421 and verdict.enhanced in (None, "4.4.2"))


def _decide(code: int, text: str, enhanced: str | None, stage: Stage) -> Decision:
    if 200 <= code < 400:
        return Decision.DELIVERED
    if code in texts.ACCOUNT_CODES or enhanced in texts.ACCOUNT_ENHANCED:
        return Decision.ACCOUNT
    if 400 <= code < 500:
        return _temporary(code, text, enhanced, stage)
    if enhanced in texts.RECIPIENT_POLICY_ENHANCED:
        return Decision.REFUSED
    if _says(text, texts.ACCOUNT_TEXTS):
        return Decision.ACCOUNT
    return _permanent(code, text, enhanced, stage)


def _permanent(code: int, text: str, enhanced: str | None, stage: Stage) -> Decision:
    if stage is Stage.RCPT:
        return _refused_recipient(code, text, enhanced)
    if stage in (Stage.CONNECT, Stage.EHLO, Stage.STARTTLS, Stage.AUTH):
        return Decision.ACCOUNT  # no message was involved yet: the set-up is refused
    if stage is Stage.MAIL:
        if (enhanced or "").startswith(("5.2.3", "5.3.", "5.6.")):
            return Decision.REFUSED  # size or content: this message
        return Decision.ACCOUNT  # the sender is refused: every message from it would be
    if _mailbox_full(text, enhanced):
        return Decision.MAILBOX_FULL
    return Decision.REFUSED


def _temporary(code: int, text: str, enhanced: str | None, stage: Stage) -> Decision:
    if _says(text, texts.GREYLIST_TEXTS):
        return Decision.TRANSIENT
    if _says(text, texts.TEMPORARY_ACCOUNT_TEXTS):
        return Decision.ACCOUNT  # relay, TLS or quota: waiting a minute will not help
    if stage is Stage.RCPT and _too_many_recipients(text, enhanced):
        return Decision.TOO_MANY_RECIPIENTS
    if stage in (Stage.RCPT, Stage.DATA, Stage.END_OF_DATA) and _mailbox_full(text, enhanced):
        return Decision.MAILBOX_FULL
    if code == 432 or enhanced in texts.THROTTLE_ENHANCED or _says(text, texts.THROTTLE_TEXTS):
        return Decision.THROTTLE
    if enhanced is not None and _microsoft_throttle(enhanced):
        return Decision.THROTTLE
    if code == 421 and enhanced == "4.7.0" and "try again later" in text:
        return Decision.THROTTLE  # Gmail, Yahoo: "try again later, closing connection"
    return Decision.TRANSIENT


def _microsoft_throttle(enhanced: str) -> bool:
    """4.7.500-4.7.699: Microsoft's "server busy / access denied, try again later"."""
    klass, subject, detail = enhanced.split(".")
    return (klass, subject) == ("4", "7") and 500 <= int(detail) <= 699


def _too_many_recipients(text: str, enhanced: str | None) -> bool:
    """A cap per transaction (send the rest now), not per hour (that is a throttle)."""
    if "throttl" in text or "this hour" in text:
        return False
    return enhanced in texts.TOO_MANY_ENHANCED or _says(text, texts.TOO_MANY_TEXTS)


def _refused_recipient(code: int, text: str, enhanced: str | None) -> Decision:
    """A permanent RCPT refusal that is not about the sender: only evidence suppresses."""
    if _too_many_recipients(text, enhanced):
        return Decision.TOO_MANY_RECIPIENTS  # RFC 5321 4.5.3.1.10: treat 552 as 452
    if code == 503:
        return Decision.ACCOUNT  # bad sequence: our session or set-up, not this person
    if _mailbox_full(text, enhanced):
        return Decision.MAILBOX_FULL
    if enhanced in texts.UNKNOWN_ENHANCED:
        return Decision.UNKNOWN_RECIPIENT
    if enhanced == "5.2.1" and _says(text, texts.DISABLED_TEXTS):
        return Decision.UNKNOWN_RECIPIENT
    if enhanced in texts.VAGUE_ENHANCED and _says(text, texts.UNKNOWN_TEXTS):
        return Decision.UNKNOWN_RECIPIENT
    return Decision.REFUSED


def _mailbox_full(text: str, enhanced: str | None) -> bool:
    if enhanced in texts.MAILBOX_FULL_ENHANCED:
        return True
    if enhanced is not None and enhanced.split(".")[1] not in ("0", "2"):
        return False  # "quota" under a 5.7 or 4.7 code is about the sender, not a mailbox
    return _says(text, texts.MAILBOX_FULL_TEXTS)


def _account_cause(code: int, text: str, enhanced: str | None) -> str:
    if code in texts.ACCOUNT_CODES or enhanced in texts.CREDENTIAL_ENHANCED:
        return "credentials"
    for cause, signals in (
        ("sender", texts.SENDER_TEXTS),
        ("relay", texts.RELAY_TEXTS),
        ("blocked", texts.BLOCKED_CLIENT_TEXTS),
        ("quota", texts.SENDING_QUOTA_TEXTS),
    ):
        if _says(text, signals):
            return cause
    if enhanced in ("5.7.60", "5.1.7", "5.1.8"):
        return "sender"
    if enhanced in ("5.7.25", "5.7.708", "5.7.750", "5.7.511"):
        return "blocked"
    if enhanced == "5.4.5":
        return "quota"
    return "setup"


def _says(text: str, signals: tuple[str, ...]) -> bool:
    return any(signal in text for signal in signals)
