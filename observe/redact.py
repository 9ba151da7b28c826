"""Masking e-mail addresses in text that leaves the process (logs, Sentry events)."""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[^\s<>()\[\],;:\"'@]+@[^\s<>()\[\],;:\"'@]+\.[A-Za-z0-9-]{2,}")


def mask_addresses(text: str) -> str:
    """``"550 <ann@example.com> unknown"`` → ``"550 <[email]> unknown"``."""
    return _EMAIL.sub("[email]", text)
