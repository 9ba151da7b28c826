"""Errors a producer sees at enqueue time, before anything reaches Redis.

InvalidEmail (ValueError)          any bad argument to send_email.delay(); ``.field`` names it
├── InvalidAddress                 an address email-validator refuses, or no recipient at all
├── HeaderInjection                CR, LF, NUL or other controls in a header name or value or
│                                  a file name; a header name that is not printable ASCII
├── HeaderTooLong                  a header name over 76 characters, or a value that does not
│                                  fit in one 998-octet line with its name once encoded
├── InvalidAttachment              missing keys, bad base64, bad or composite MIME type
├── MessageTooLarge                over MAX_MESSAGE_BYTES
└── UnknownAccount                 ``account=`` names no configured SMTP_URL_<NAME>
QueueUnavailable (ConnectionError) Redis did not answer within REDIS_TIMEOUT
"""

from __future__ import annotations

from mailworker.errors import MailworkerError


class InvalidEmail(MailworkerError, ValueError):
    """``send_email`` refused its arguments; nothing was queued."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class InvalidAddress(InvalidEmail):
    pass


class HeaderInjection(InvalidEmail):
    pass


class HeaderTooLong(InvalidEmail):
    pass


class InvalidAttachment(InvalidEmail):
    pass


class MessageTooLarge(InvalidEmail):
    pass


class UnknownAccount(InvalidEmail):
    pass


class QueueUnavailable(MailworkerError, ConnectionError):
    """The broker could not take the job; the caller should retry or report it."""
