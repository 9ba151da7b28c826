"""The stage of an SMTP session a reply answered: an explicit input to every decision."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    CONNECT = "connect"  # the greeting banner
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the DATA command (354 expected)
    END_OF_DATA = "end_of_data"  # the reply after the content's final dot
