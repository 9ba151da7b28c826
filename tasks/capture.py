"""Where ``send_email`` puts a job while an app's test captures mail instead of sending it.

:func:`mailworker.testing.capture_emails` sets :data:`RECORDER` for the code that runs in
its context (this thread or task only: a context variable, so a real send elsewhere in the
same process still goes to Redis). ``send_email.apply_async`` validates exactly as always,
then hands the job here instead of to Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from mailworker.store.job import EmailJob

# (job, queue, send_at) -> None; None: send for real.
Recorder = Callable[[EmailJob, str, float | None], None]
RECORDER: ContextVar[Recorder | None] = ContextVar("mailworker_capture", default=None)
