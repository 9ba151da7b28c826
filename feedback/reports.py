"""Reading one returned message: a bounce (DSN), a complaint (ARF), an auto-reply, or noise.

    read_report(raw bytes) -> Report(kind, original Message-ID, job id, recipients)

A DSN (RFC 3464) is a ``multipart/report; report-type=delivery-status`` whose
``message/delivery-status`` part holds one block of fields per recipient (Final-Recipient,
Action, Status, Diagnostic-Code); the original message or its headers follow, with the
Message-ID mailworker set (``<job id@domain>``). An ARF report (RFC 5965) has a
``message/feedback-report`` part instead. Each failed recipient is judged by
delivery.classify as a RCPT reply would be: ``hard`` only for a recipient that does not
exist; a full mailbox, a policy refusal or anything vague is ``soft`` (counted, never
suppressed at once). A ``delayed`` DSN is news, not a failure. An auto-reply (out of office)
is not a bounce at all. Anything else is ``unknown`` and changes nothing.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, replace
from email.message import Message
from email.utils import getaddresses
from typing import Literal

from mailworker.delivery.classify import Decision, classify_reply
from mailworker.delivery.stage import Stage
from mailworker.feedback import plaintext

Kind = Literal["bounce", "complaint", "auto-reply", "unknown"]
# ARF feedback types a person's "this is spam" sends (RFC 5965); auth-failure (RFC 6591,
# DMARC), not-spam and the rest are not complaints about the recipient's mail.
COMPLAINTS = frozenset({"abuse", "fraud", "virus"})
Severity = Literal["hard", "soft", "delayed", "complaint"]

_SMTP_CODE = re.compile(r"\b([245]\d\d)\b")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID = re.compile(r"<([^<>@\s]+)@[^<>\s]+>")
_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response)|"
    r"abwesenheitsnotiz|r[ée]ponse automatique|absence)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RecipientReport:
    address: str
    severity: Severity
    status: str = ""  # the DSN's status code (x.y.z), if any
    diagnostic: str = ""  # the remote server's words, if any
    feedback_type: str = ""  # for a complaint: abuse, fraud, ...


@dataclass(frozen=True)
class Report:
    kind: Kind
    message_id: str | None = None  # the original message's Message-ID
    recipients: tuple[RecipientReport, ...] = ()
    verp_id: str | None = None  # the job named by the address it came back to (RETURN_PATH)

    @property
    def job_id(self) -> str | None:
        """The job the original message was (mailworker's Message-ID is ``<job id@...>``),
        or the one its VERP return address names when no original was quoted."""
        found = _MESSAGE_ID.search(self.message_id or "")
        return found.group(1) if found else self.verp_id


def read_report(raw: bytes, return_path: str | None = None) -> Report:
    """What ``raw`` (one whole message, as fetched from the bounce mailbox) reports; with
    ``return_path`` (RETURN_PATH) also the job its VERP address ``local+<id>@domain`` names."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    report = _read(message)
    verp_id = _verp_id(message, return_path) if return_path else None
    return replace(report, verp_id=verp_id) if verp_id else report


def _read(message: Message) -> Report:
    param = message.get_param("report-type")
    report_type = param.lower() if isinstance(param, str) else ""
    if message.get_content_type() == "multipart/report" or _part(
        message, "message/delivery-status"
    ):
        if report_type == "feedback-report" or _part(message, "message/feedback-report"):
            return _complaint(message)
        if _part(message, "message/delivery-status") is not None:
            return _bounce(message)
    if _part(message, "message/feedback-report") is not None:
        return _complaint(message)
    if plaintext.is_bounce(message):  # before auto-replies: Exim marks bounces auto-replied
        return _plain_bounce(message)
    jmrp = plaintext.jmrp_recipient(_original(message))
    if jmrp:
        return Report("complaint", _original_id(message),
                      (RecipientReport(jmrp, "complaint", feedback_type="abuse"),))  # fmt: skip
    if _is_auto_reply(message):
        return Report("auto-reply", _original_id(message, fallback=True))
    return Report("unknown", _original_id(message))


def _bounce(message: Message) -> Report:
    recipients = []
    for block in _blocks(_part(message, "message/delivery-status"))[1:]:
        recipient = _recipient(block)
        if recipient is not None:
            recipients.append(recipient)
    return Report("bounce", _original_id(message), tuple(recipients))


def _plain_bounce(message: Message) -> Report:
    recipients = tuple(
        RecipientReport(address, severity, status, diagnostic)  # type: ignore[arg-type]
        for address, severity, status, diagnostic in plaintext.failed_recipients(
            message, judge_failure
        )
    )
    message_id = _original_id(message) or plaintext.pasted_message_id(message)
    return Report("bounce", message_id, recipients)


def _recipient(block: Message) -> RecipientReport | None:
    address = _address(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
    if not address:
        return None
    action = (block.get("Action") or "").strip().lower()
    status = _STATUS.search(block.get("Status") or "")
    code = status.group(0) if status else ""
    diagnostic = " ".join((block.get("Diagnostic-Code") or "").split())
    diagnostic = diagnostic.split(";", 1)[-1].strip() if ";" in diagnostic else diagnostic
    if action in ("delayed", "delivered", "relayed", "expanded"):
        return RecipientReport(address, "delayed", code, diagnostic)
    return RecipientReport(
        address, judge_failure(code, diagnostic, block.get("Status") or ""), code, diagnostic
    )


def judge_failure(status: str, diagnostic: str, status_text: str = "") -> Severity:
    """Judge a failed recipient as the same reply at RCPT would be judged (DSNs, provider
    events): ``hard`` only for a recipient that does not exist."""
    reply = _SMTP_CODE.search(diagnostic)
    klass = status[:1] or (reply.group(1)[:1] if reply else "")
    if klass != "5":
        return "soft"  # a temporary failure reported as final: retry-worthy, not a bounce
    code = int(reply.group(1)) if reply and reply.group(1).startswith("5") else 550
    text = " ".join(part for part in (status, diagnostic, status_text) if part)
    verdict = classify_reply(code, text, stage=Stage.RCPT)
    return "hard" if verdict.decision is Decision.UNKNOWN_RECIPIENT else "soft"


def _complaint(message: Message) -> Report:
    fields = _blocks(_part(message, "message/feedback-report"))
    block = fields[0] if fields else Message()
    feedback_type = (block.get("Feedback-Type") or "abuse").strip().lower()
    if feedback_type not in COMPLAINTS:  # a DMARC failure report, "not-spam": nobody complained
        return Report("unknown", _original_id(message))
    original = _original(message)
    address = _address(block.get("Original-Rcpt-To") or "")
    if not address and original is not None:
        address = _address(original.get("To") or "")
    recipients = (RecipientReport(address, "complaint", feedback_type=feedback_type),)
    return Report("complaint", _original_id(message), recipients if address else ())


def _is_auto_reply(message: Message) -> bool:
    auto = (message.get("Auto-Submitted") or "").strip().lower()
    if auto.startswith("auto-replied"):
        return True
    if message.get("X-Autoreply") or message.get("X-Autorespond"):
        return True
    if (message.get("Precedence") or "").strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.search(message.get("Subject") or ""))


def _part(message: Message, content_type: str) -> Message | None:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _original(message: Message) -> Message | None:
    """The returned message, or its headers (``message/rfc822``, ``text/rfc822-headers``)."""
    enclosed = _blocks(_part(message, "message/rfc822"))
    if enclosed:
        return enclosed[0]
    headers = _part(message, "text/rfc822-headers")
    if headers is not None:
        text = headers.get_payload(decode=True)
        if isinstance(text, bytes):
            return email.message_from_bytes(text, policy=email.policy.compat32)
    return None


def _blocks(part: Message | None) -> list[Message]:
    """The messages a ``message/*`` part holds (for delivery-status: its field blocks)."""
    payload = part.get_payload() if part is not None else None
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    return []


def _original_id(message: Message, *, fallback: bool = False) -> str | None:
    original = _original(message)
    if original is not None and original.get("Message-ID"):
        return str(original.get("Message-ID")).strip()
    if fallback:  # an auto-reply names what it answers in In-Reply-To / References
        for header in ("In-Reply-To", "References"):
            found = _MESSAGE_ID.search(message.get(header) or "")
            if found:
                return found.group(0)
    return None


def _verp_id(message: Message, return_path: str) -> str | None:
    """The job id in the address the report was delivered to: ``bounces+<id>@domain``."""
    local, _, domain = return_path.lower().rpartition("@")
    for header in ("Delivered-To", "X-Original-To", "Envelope-To", "To"):
        for _, address in getaddresses(message.get_all(header) or []):
            box, _, where = address.lower().rpartition("@")
            if where == domain and box.startswith(local + "+"):
                return address.rpartition("@")[0][len(local) + 1 :] or None
    return None


def _address(field: str) -> str:
    """``rfc822; Ann <ann@example.com>`` -> ``ann@example.com`` (other address types: '')."""
    kind, _, value = field.partition(";")
    if not value:
        kind, value = "rfc822", kind
    if kind.strip().lower() not in ("rfc822", "utf-8"):
        return ""
    addresses = [address for _, address in getaddresses([value.strip()]) if "@" in address]
    return addresses[0] if addresses else ""
