"""The one error a bad configuration raises: it names the variable to fix."""

from __future__ import annotations

from mailworker.errors import MailworkerError


class SettingsError(MailworkerError, ValueError):
    """A configuration value is missing or malformed.

    ``variable`` is the exact environment variable to fix, so start-up errors read as
    instructions ("SMTP_URL_BULK: ...") instead of stack traces.
    """

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")
