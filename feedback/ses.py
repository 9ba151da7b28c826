"""Amazon SES bounce and complaint notifications, delivered by SNS (HTTPS subscription).

    from mailworker.feedback.ses import ses_provider
    from mailworker.feedback.webhooks import handle

    response = handle(ses_provider(), request_body)   # -> Response(status, body)

The SNS envelope is verified first (:mod:`mailworker.feedback.sns`: signature, certificate
host, ``SES_SNS_TOPICS``); a SubscriptionConfirmation is confirmed. The SES message names
the original by its Message-ID header (``mail.headers`` when "include original headers" is
on, else ``mail.commonHeaders.messageId``). A ``Permanent`` bounce is hard only when SES or
the recipient's status says the address does not exist (subtype ``NoEmail``, ``Suppressed``
or a 5.1.x status); other permanent bounces are judged like a DSN, and ``Transient`` or
``Undetermined`` are soft. Both notification formats (identity notifications'
``notificationType`` and configuration-set events' ``eventType``) are read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mailworker.feedback.reports import RecipientReport, Report, Severity, judge_failure
from mailworker.feedback.sns import (
    Fetch,
    Refused,
    confirm_subscription,
    https_fetch,
    verified_message,
)
from mailworker.settings import get_settings

_HARD_SUBTYPES = {"NoEmail", "Suppressed", "OnAccountSuppressionList"}


@dataclass
class SesProvider:
    """Reads SES notifications out of verified SNS messages."""

    topics: Iterable[str]
    fetch: Fetch = https_fetch
    name: str = "ses"
    confirmed: list[str] = field(default_factory=list)  # topics confirmed by this process

    def read(self, body: bytes, headers: Mapping[str, str]) -> list[Report]:
        message = verified_message(body, tuple(self.topics), self.fetch)
        if message["Type"] == "SubscriptionConfirmation":
            confirm_subscription(message, self.fetch)
            self.confirmed.append(str(message["TopicArn"]))
            return []
        if message["Type"] != "Notification":
            return []
        try:
            notification = json.loads(message["Message"])
        except (TypeError, ValueError):
            raise Refused("the notification's Message is not SES JSON") from None
        report = ses_report(notification) if isinstance(notification, dict) else None
        return [report] if report is not None else []


def ses_provider() -> SesProvider:
    """The provider for the topics in ``SES_SNS_TOPICS``."""
    return SesProvider(get_settings().feedback.sns_topics)


def ses_report(notification: dict[str, Any]) -> Report | None:
    """The report in one SES notification; ``None`` for deliveries and the like."""
    kind = notification.get("notificationType") or notification.get("eventType")
    message_id = _message_id(notification.get("mail") or {})
    if kind == "Bounce":
        bounce = notification.get("bounce") or {}
        recipients = tuple(
            _bounced(r, bounce)
            for r in bounce.get("bouncedRecipients") or []
            if r.get("emailAddress")
        )
        return Report("bounce", message_id, recipients)
    if kind == "Complaint":
        complaint = notification.get("complaint") or {}
        feedback = str(complaint.get("complaintFeedbackType") or "abuse")
        recipients = tuple(
            RecipientReport(str(r["emailAddress"]), "complaint", feedback_type=feedback)
            for r in complaint.get("complainedRecipients") or []
            if r.get("emailAddress")
        )
        return Report("complaint", message_id, recipients)
    return None


def _bounced(recipient: dict[str, Any], bounce: dict[str, Any]) -> RecipientReport:
    status = str(recipient.get("status") or "")
    diagnostic = str(recipient.get("diagnosticCode") or "")
    return RecipientReport(str(recipient["emailAddress"]), _severity(bounce, status, diagnostic),
                           status, diagnostic)  # fmt: skip


def _severity(bounce: dict[str, Any], status: str, diagnostic: str) -> Severity:
    if bounce.get("bounceType") != "Permanent":
        return "soft"  # Transient, Undetermined: never suppress at once
    if bounce.get("bounceSubType") in _HARD_SUBTYPES:
        return "hard"
    return judge_failure(status or "5.0.0", diagnostic)


def _message_id(mail: dict[str, Any]) -> str | None:
    for header in mail.get("headers") or []:
        if str(header.get("name", "")).lower() == "message-id":
            return str(header.get("value"))
    common = mail.get("commonHeaders") or {}
    return str(common["messageId"]) if common.get("messageId") else None
