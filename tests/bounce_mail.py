"""Returned mail as MTAs write it, around a given original: DSNs (RFC 3464) as Postfix and
Exim send them, ARF complaints (RFC 5965) as Yahoo's feedback loop does, auto-replies."""

from __future__ import annotations


def block(recipient: str, action: str, status: str, diagnostic: str = "") -> str:
    """One recipient's fields in a DSN."""
    lines = [f"Final-Recipient: rfc822; {recipient}", f"Action: {action}", f"Status: {status}"]
    if diagnostic:
        lines.append(f"Diagnostic-Code: smtp; {diagnostic}")
    return "\n".join(lines)


def dsn(
    original: str, *blocks: str, headers_only: bool = False, to: str = "app@example.com"
) -> bytes:
    """A multipart/report DSN to ``to`` returning ``original`` (whole, or its headers only)."""
    original = original.replace("\r\n", "\n")
    if headers_only:
        returned = "Content-Type: text/rfc822-headers\n\n" + original.split("\n\n", 1)[0]
    else:
        returned = "Content-Type: message/rfc822\n\n" + original
    fields = "Reporting-MTA: dns; mx.example.net\n\n" + "\n\n".join(blocks)
    text = f"""From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--B
Content-Type: message/delivery-status

{fields}

--B
{returned}
--B--
"""
    return text.replace("\n", "\r\n").encode()


def arf(original: str, recipient: str, feedback_type: str = "abuse") -> bytes:
    """An ARF report (RFC 5965) about ``original``, as Yahoo's feedback loop sends it."""
    original = original.replace("\r\n", "\n")
    text = f"""From: feedback@arf.mail.yahoo.com
Subject: FW: Your receipt
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="A"

--A
Content-Type: text/plain

This is an email abuse report for an email message received.

--A
Content-Type: message/feedback-report

Feedback-Type: {feedback_type}
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 1
Original-Rcpt-To: <{recipient}>

--A
Content-Type: message/rfc822

{original}
--A--
"""
    return text.replace("\n", "\r\n").encode()


def auto_reply(message_id: str) -> bytes:
    """An out-of-office reply to the message ``message_id``."""
    text = f"""From: ann@example.com
To: app@example.com
Subject: Automatic reply: Your receipt
Auto-Submitted: auto-replied
In-Reply-To: {message_id}

I am out of the office until Monday.
"""
    return text.replace("\n", "\r\n").encode()
