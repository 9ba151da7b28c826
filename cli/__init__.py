"""The ``mailworker`` command line: one module per command group, on a shared base.

    base          the ``main`` group, consoles, exit codes (1 = broken, 2 = usage/config)
    jobs          send, status
    accounts      check, doctor, limits, stats, resume
    dead_letters  dead list|show|retry|purge
    campaigns     campaign start|preview|test|status|pause|resume|cancel
    exporter      exporter (the cluster's gauges for Prometheus)
    suppression   suppress add|remove|check|list|import|export
    bounces       bounces watch|check (the bounce mailbox reader)
    dev           devserver, demo

Commands talk to the state through :mod:`mailworker.store` and the producer API, never to
raw Redis keys.
"""

from __future__ import annotations

# Each group module registers its commands on ``main`` when imported.
from mailworker.cli import (  # noqa: F401
    accounts,
    bounces,
    campaigns,
    dead_letters,
    dev,
    exporter,
    jobs,
    suppression,
)
from mailworker.cli.base import main

__all__ = ["main"]
