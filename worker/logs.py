"""Log lines an operator can use: one per delivery attempt, no addresses, JSON on request.

``LOG_FORMAT=json`` turns every record of the worker into one JSON object per line (with the
fields passed in ``extra=``, such as job_id, account, outcome, smtp_code, attempt,
latency_ms). E-mail addresses in any message are masked as ``[email]`` unless
``LOG_ADDRESSES=true``; subjects and bodies are never logged.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from settings import Settings
from tasks.redact import mask_addresses

# Attributes every LogRecord has; anything else came from ``extra=`` and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class MaskAddresses(logging.Filter):
    """Rewrites each record's message with addresses masked (it never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_addresses(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(settings: Settings, handlers: list[logging.Handler] | None = None) -> None:
    """Install the mask and, with ``LOG_FORMAT=json``, the JSON format on ``handlers``
    (default: the root logger's, which is where Celery's worker logs go)."""
    targets = handlers if handlers is not None else logging.getLogger().handlers
    for handler in targets:
        if not settings.observability.log_addresses and not any(
            isinstance(f, MaskAddresses) for f in handler.filters
        ):
            handler.addFilter(MaskAddresses())
        if settings.observability.log_format == "json":
            handler.setFormatter(JsonFormatter())
