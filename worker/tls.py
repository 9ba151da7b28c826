"""The client TLS context: built once per process, verified by default, TLS 1.2 at least.

Building a context with the full system CA bundle costs tens of milliseconds of CPU; doing it
per connection is a measurable slowdown, so every connection of the process shares this one.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def client_tls_context(extra_ca_file: Path | None = None) -> ssl.SSLContext:
    """System CAs plus ``SMTP_CA_FILE``; hostname and certificate checks on."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if extra_ca_file is not None:
        context.load_verify_locations(cafile=str(extra_ca_file))
    return context
