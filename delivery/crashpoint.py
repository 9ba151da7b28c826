"""Named steps of a job's life where the crash-point tests kill the worker.

``MAILWORKER_CRASH_AT=claimed`` (a comma-separated list of steps) makes the process SIGKILL
itself on reaching that step, once per ``MAILWORKER_CRASH_ONCE`` marker file; without the
variable (always, outside those tests) each point is one frozenset lookup. The steps:

    taken      the task started: the message is out of the queue, the job not yet claimed
    claimed    the job is ``sending`` under this worker's lease
    mail-from  the server accepted MAIL FROM (with the pipelined RCPTs and DATA); with
               CHUNKING the envelope and content are answered together: no such moment
    accepted   the server said 250 to the content; not yet written down (RFC 1047 window)
    recorded   the 250 is in the sent-ledger; the job is not yet settled
    settled    the job's new state is committed; the broker message not yet acked

and the bounce reader's:

    report-read     it fetched a returned message and applied nothing yet
    report-applied  the report is applied; the message is still in the bounce mailbox
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

STEPS = ("taken", "claimed", "mail-from", "accepted", "recorded", "settled")
READER_STEPS = ("report-read", "report-applied")  # the bounce reader's (feedback.mailbox)
_AT = frozenset(step for step in os.environ.get("MAILWORKER_CRASH_AT", "").split(",") if step)
_ONCE = os.environ.get("MAILWORKER_CRASH_ONCE", "")


def crash_point(step: str) -> None:
    if step not in _AT:
        return
    if _ONCE:
        marker = Path(_ONCE)
        if marker.exists():
            return
        marker.write_text(step)
    os.kill(os.getpid(), signal.SIGKILL)
