"""The leases this process holds on the jobs it is sending, renewed while they run.

A job being sent is ``sending`` under a lease (store.lifecycle); one daemon thread per
process renews every lease it holds each third of the lease, in one pipeline. A worker that
is killed stops renewing, and the reaper returns its jobs one lease later. A job stuck past
its attempt's bound (a hung session) is no longer renewed either: it comes back too.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time

from mailworker.settings import get_settings
from mailworker.store import lifecycle

log = logging.getLogger("mailworker.leases")


_prefix: tuple[int, str] = (0, "")
_attempts = itertools.count()


def new_owner() -> str:
    """A token naming one attempt: host, process, a random part drawn once per process (a
    pid can be reused) and a counter. Drawn per attempt it cost a uuid4 and a uname call on
    every message (1.2% of a busy worker's samples)."""
    global _prefix
    if _prefix[0] != os.getpid():
        _prefix = (os.getpid(), f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}")
    return f"{_prefix[1]}:{next(_attempts)}"


class LeaseKeeper:
    def __init__(self, lease: float) -> None:
        self.lease = lease
        self._held: dict[str, tuple[str, float]] = {}  # job id -> (owner, renew until)
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self, job_id: str, owner: str, bound: float) -> None:
        """Keep ``job_id``'s lease for at most ``bound`` seconds from now."""
        with self._lock:
            self._held[job_id] = (owner, time.monotonic() + bound)
            self._lost.discard(job_id)
            if self._thread is None or self._pid != os.getpid():  # first use, or forked
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="mailworker-leases", daemon=True
                )
                self._thread.start()

    def release(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)
            self._lost.discard(job_id)

    def lost(self, job_id: str) -> bool:
        """Whether the lease was found taken by another worker (this attempt is orphaned)."""
        with self._lock:
            return job_id in self._lost

    def renew_once(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = {job: owner for job, (owner, until) in self._held.items() if until > now}
        held = lifecycle.renew(due, self.lease)
        with self._lock:
            for job_id, still in held.items():
                if not still and job_id in self._held:
                    log.warning("job %s: lease lost; another worker has the job", job_id)
                    self._lost.add(job_id)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.lease / 3)
            try:
                self.renew_once()
            except Exception:  # noqa: BLE001 - Redis away: the next round tries again
                log.warning("renewing job leases failed; retrying", exc_info=True)


_keeper: LeaseKeeper | None = None
_keeper_lock = threading.Lock()


def keeper() -> LeaseKeeper:
    """This process's lease keeper (made on first use, after any fork)."""
    global _keeper
    with _keeper_lock:
        if _keeper is None:
            _keeper = LeaseKeeper(get_settings().recovery.lease)
        return _keeper
