"""Turn every SMTP outcome into one decision: the single place that reads reply codes.

Inputs are the basic reply code, the enhanced status code (RFC 3463, ``X.Y.Z`` at the start
of the reply text) and known provider texts. Outputs:

    DELIVERED        250 to DATA
    TRANSIENT        try again later (4xx, timeouts, dropped connections, TLS hiccups)
    BOUNCE           this recipient is permanently refused: bounce and suppress it
    ACCOUNT          the account is broken or over quota: pause it, keep the mail queued
    INVALID_MESSAGE  the message itself is refused (5.6.x, size): dead-letter at once

A hint in the reply ("try again in 30 seconds") is returned as ``retry_after``; a reply that
says the sender is going too fast (421 4.7.0, 450 4.2.1, 432 4.3.2, 454 "throttling") is
TRANSIENT with ``throttled`` set, which slows the account down (see worker.ratelimit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from worker.errors import AccountProblem, DeliveryError


class Decision(Enum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"
    BOUNCE = "bounce"
    ACCOUNT = "account"
    INVALID_MESSAGE = "invalid_message"


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    code: int | None = None
    enhanced: str | None = None
    retry_after: float | None = None
    throttled: bool = False


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_RETRY_HINT = re.compile(
    r"(?:try again|retry)\s+(?:later\s+)?(?:in|after)\s+(\d+)\s*(s|sec|second|seconds|m|min|"
    r"minute|minutes|h|hour|hours)\b",
    re.IGNORECASE,
)
_UNITS = {"s": 1, "m": 60, "h": 3600}
# Provider texts that mean "this account, not this message": daily quotas and sending limits.
_QUOTA_TEXTS = (
    "daily quota exceeded",
    "daily user sending quota exceeded",
    "daily sending quota",
    "sending limit exceeded",
    "quota exceeded",
)
# Accounts refused at the policy level: Microsoft 365 "SmtpClientAuthentication is disabled"
# (5.7.139 / 5.7.3) and "client not authenticated to send mail" (5.7.57), Gmail 5.7.30 ...
_ACCOUNT_ENHANCED = {"5.7.139", "5.7.3", "5.7.30", "5.7.57", "5.7.8"}
# "Slow down": Gmail 421 4.7.0 / 450 4.2.1, Microsoft 432 4.3.2 and 4.7.500, SES 454 Throttling.
_THROTTLE_ENHANCED = {"4.7.0", "4.2.1", "4.3.2", "4.7.500"}
_THROTTLE_TEXTS = (
    "throttl",
    "rate limit",
    "too many messages",
    "too many connections",
    "slow down",
)


def enhanced_code(reply: str) -> str | None:
    match = _ENHANCED.match(reply or "")
    return ".".join(match.groups()) if match else None


def retry_hint(reply: str) -> float | None:
    match = _RETRY_HINT.search(reply or "")
    if not match:
        return None
    return float(match.group(1)) * _UNITS[match.group(2)[0].lower()]


def is_throttle(code: int, reply: str) -> bool:
    """Does this 4xx reply ask the sender to go slower?"""
    if not 400 <= code < 500:
        return False
    text = (reply or "").lower()
    return enhanced_code(reply) in _THROTTLE_ENHANCED or any(t in text for t in _THROTTLE_TEXTS)


def classify_reply(code: int, reply: str, *, stage: str = "data") -> Verdict:
    """Classify a reply to MAIL, RCPT or DATA (``stage`` is ``"rcpt"`` for recipients)."""
    enhanced = enhanced_code(reply)
    text = (reply or "").lower()
    hint = retry_hint(reply)
    if 200 <= code < 300:
        return Verdict(Decision.DELIVERED, code, enhanced)
    if any(quota in text for quota in _QUOTA_TEXTS) or enhanced in ("5.4.5", "4.4.5"):
        return Verdict(Decision.ACCOUNT, code, enhanced, hint)
    if (
        code == 535
        or code == 530
        or (code >= 500 and enhanced in _ACCOUNT_ENHANCED and stage != "rcpt")
    ):
        return Verdict(Decision.ACCOUNT, code, enhanced, hint)
    if 400 <= code < 500:
        return Verdict(Decision.TRANSIENT, code, enhanced, hint, is_throttle(code, reply))
    if (enhanced or "").startswith(("5.6.", "5.3.4")) or (code == 552 and stage != "rcpt"):
        return Verdict(Decision.INVALID_MESSAGE, code, enhanced)  # malformed or too large
    if stage == "rcpt" or (enhanced or "").startswith("5.1.") or code in (550, 551, 553):
        return Verdict(Decision.BOUNCE, code, enhanced)
    # Any other 5xx to the whole message: retrying will not help and no recipient is to blame.
    return Verdict(Decision.INVALID_MESSAGE, code, enhanced)


def classify_error(error: DeliveryError) -> Verdict:
    """A whole-message failure raised by the delivery pipeline."""
    if isinstance(error, AccountProblem):
        return Verdict(Decision.ACCOUNT, error.code, enhanced_code(error.reply))
    if error.code is None:
        return Verdict(Decision.TRANSIENT)  # timeouts, dropped connections, TLS hiccups
    return classify_reply(error.code, error.reply)
