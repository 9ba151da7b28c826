"""Small waiting and lookup helpers shared by the tests."""

from __future__ import annotations

import time
from typing import Any

from tasks import status
from worker.devserver import DevServer, ReceivedMessage


def wait_for_status(job_id: str, *states: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll the job's status record until its state is one of ``states``."""
    deadline = time.monotonic() + timeout
    record = None
    while time.monotonic() < deadline:
        record = status(job_id)
        if record and record["state"] in states:
            return record
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}; last status: {record}")


def messages_of(server: DevServer, job_id: str) -> list[ReceivedMessage]:
    return [m for m in server.messages if job_id.encode() in m.data.split(b"\r\n\r\n")[0]]
