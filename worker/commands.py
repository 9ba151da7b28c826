"""The one ``celery worker`` command line used by the demo, the tests and the benchmark."""

from __future__ import annotations

import sys


def celery_worker_argv(
    queue: str,
    *,
    app: str = "mailworker.worker",
    pool: str = "threads",
    concurrency: int = 4,
    loglevel: str = "WARNING",
    hostname: str | None = None,
    quiet: bool = False,
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "celery",
        *(["--quiet"] if quiet else []),  # no banner (the demo prints its own story)
        "-A",
        app,
        "worker",
        "-Q",
        queue,
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv += ["--hostname", hostname]
    return argv
