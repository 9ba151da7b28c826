"""Log lines an operator can use: one per delivery attempt, no addresses, JSON on request.

``LOG_FORMAT=json`` turns every record of the worker into one JSON object per line (with the
fields passed in ``extra=``, such as job_id, account, outcome, smtp_code, attempt,
latency_ms). E-mail addresses are masked as ``[email]`` unless ``LOG_ADDRESSES=true``: in
the message, the exception and stack text, and every ``extra=`` field, however nested
(Celery's "received" record carries a job's arguments in ``data``); subjects and bodies
are never logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from mailworker.observe.redact import mask_addresses
from mailworker.settings import Settings

# Attributes every LogRecord has; anything else came from ``extra=`` and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class MaskAddresses(logging.Filter):
    """Masks addresses in every part of a record a formatter may write (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_addresses(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_addresses(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_addresses(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, _masked(value))
        return True


def _masked(value: Any) -> Any:
    """``value`` with addresses masked in every string inside it; other objects as text."""
    if isinstance(value, str):
        return mask_addresses(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {_masked(str(k)): _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(v) for v in value]
    return mask_addresses(str(value))


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
        if record.exc_info or record.exc_text:
            entry["exception"] = record.exc_text or (
                self.formatException(record.exc_info) if record.exc_info else ""
            )
        if record.stack_info:
            entry["stack"] = record.stack_info
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
