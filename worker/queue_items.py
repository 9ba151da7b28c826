"""What may come off a queue list: checked before kombu or Celery reads a byte of it.

Anyone who can write to the Redis can push any bytes onto ``mailworker:celery:<queue>``.
kombu and Celery read what they find trusting its shape: an integer stops the worker
(TypeError), ``[`` x 100,000 stops it too (RecursionError), ``{}`` vanishes without a trace.
:func:`screen` looks at each raw item first and raises :class:`ForeignItem` with a reason
for anything that is not a task message mailworker could have published:

1. limits before parsing: the size (:func:`item_limit`), UTF-8, the nesting depth;
2. the kombu envelope: an object with ``body`` (a base64 string), ``content-type``,
   ``content-encoding``, ``headers`` (``id`` and ``task`` strings, no ``eta``/``expires``:
   mailworker schedules through Redis) and ``properties`` (``delivery_tag``,
   ``body_encoding`` = base64, ``delivery_info`` with ``exchange`` and ``routing_key``);
3. for JSON content, the body: the same limits, then ``[args, kwargs, options]`` with no
   callbacks, chains or chords.

Other content types (a pickle) pass to Celery, which refuses to deserialise them (also a
dead letter, see :mod:`worker.undecodable`). Nothing here ever deserialises anything but
JSON, and no reason quotes the item's content.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from kombu.utils import json as kombu_json

MAX_DEPTH = 32  # a job is 6 levels deep, a campaign batch 7
MAX_CONTAINERS = 1_000_000  # arrays and objects in one item
_STRINGS = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = b"[{"
_ID = re.compile(r"[A-Za-z0-9._:@-]{1,200}")
# Celery headers that may be present, and the types they may have (None is always allowed).
_HEADERS: dict[str, type | tuple[type, ...]] = {
    "lang": str,
    "shadow": str,
    "root_id": str,
    "parent_id": str,
    "group": str,
    "group_index": int,
    "retries": int,
    "argsrepr": str,
    "kwargsrepr": str,
    "origin": str,
    "ignore_result": bool,
    "replaced_task_nesting": int,
    "stamped_headers": list,
    "stamps": dict,
}
_PROPERTIES: dict[str, type | tuple[type, ...]] = {
    "priority": int,
    "reply_to": str,
    "correlation_id": str,
}


class ForeignItem(ValueError):
    """A queue item that is not a task message; ``reason`` says what is wrong with it."""

    def __init__(self, reason: str, job_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.job_id = job_id  # the envelope's id, once the envelope itself is sound


def item_limit(max_message_bytes: int) -> int:
    """The largest item a job within ``MAX_MESSAGE_BYTES`` can become on the queue.

    JSON escapes take up to 6 bytes for one byte of text (``\\u0001``) and the envelope
    base64-encodes the body (4/3): 8 times the message, plus 1 MiB for the rest.
    """
    return 8 * max_message_bytes + 1024 * 1024


def screen(item: bytes, max_bytes: int) -> None:
    """Return if ``item`` is a task message envelope; raise :class:`ForeignItem` if not."""
    envelope = _parse(item, max_bytes, "message envelope")
    if not isinstance(envelope, dict):
        raise ForeignItem(f"not a message envelope: a JSON {_kind(envelope)}, not an object")
    missing = [k for k in ("body", "content-type", "headers", "properties") if k not in envelope]
    if missing:
        raise ForeignItem(f"not a message envelope: missing {', '.join(missing)}")
    for key in ("body", "content-type", "content-encoding"):
        _expect(envelope, key, str, "not a message envelope: ", required=key != "content-encoding")
    headers = _expect(envelope, "headers", dict, "not a message envelope: ")
    properties = _expect(envelope, "properties", dict, "not a message envelope: ")
    for key in ("id", "task"):
        if not isinstance(headers.get(key), str) or not headers[key]:
            raise ForeignItem(f"not a task message: headers have no {key!r} string")
    try:
        _check_headers(headers)
        _check_properties(properties)
        if envelope["content-type"] == "application/json":
            _check_body(envelope, max_bytes)
    except ForeignItem as exc:
        raise ForeignItem(exc.reason, _usable_id(headers["id"])) from None


def _usable_id(job_id: str) -> str | None:
    """The envelope's id names the dead letter when it looks like an id at all."""
    return job_id if _ID.fullmatch(job_id) else None


def _check_headers(headers: dict[str, Any]) -> None:
    for key in ("eta", "expires"):
        if headers.get(key) is not None:
            raise ForeignItem(
                f"not a mailworker job: headers set {key!r} (mailworker schedules through "
                "Redis (store.lifecycle), never with a Celery ETA)"
            )
    for key, kind in _HEADERS.items():
        _expect(headers, key, kind, "headers: ", required=False, nullable=True)
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list) and len(limits) == 2 and all(map(_seconds, limits))
    ):
        raise ForeignItem("headers: timelimit is not [soft, hard] in seconds")


def _seconds(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _check_properties(properties: dict[str, Any]) -> None:
    _expect(properties, "delivery_tag", str, "properties: ")
    if properties.get("body_encoding") != "base64":
        raise ForeignItem("properties: body_encoding is not 'base64'")
    info = _expect(properties, "delivery_info", dict, "properties: ")
    for key in ("exchange", "routing_key"):
        _expect(info, key, str, "properties: delivery_info: ")
    for key, kind in _PROPERTIES.items():
        _expect(properties, key, kind, "properties: ", required=False, nullable=True)


def _check_body(envelope: dict[str, Any], max_bytes: int) -> None:
    if str(envelope.get("content-encoding", "utf-8")).lower() not in ("utf-8", "utf8"):
        raise ForeignItem("body does not decode: JSON content must be utf-8")
    try:
        raw = base64.b64decode(envelope["body"], validate=True)
    except (binascii.Error, ValueError):
        raise ForeignItem("body does not decode: not base64") from None
    body = _parse(raw, max_bytes, "task body", prefix="body does not decode: ")
    if not (
        isinstance(body, list)
        and len(body) == 3
        and isinstance(body[0], list)
        and isinstance(body[1], dict)
        and isinstance(body[2], dict)
    ):
        raise ForeignItem(
            f"not a task body: a JSON {_kind(body)}, expected [args, kwargs, options]"
        )
    if any(value is not None for value in body[2].values()):
        raise ForeignItem("not a mailworker job: callbacks, chains and chords are not accepted")


def _parse(data: bytes, max_bytes: int, what: str, prefix: str = "") -> Any:
    """JSON as kombu reads it, after the limits that keep reading it safe."""
    if len(data) > max_bytes:
        raise ForeignItem(
            f"{prefix}not a {what}: {len(data):,} bytes, larger than the {max_bytes:,} "
            "this worker reads (8 x MAX_MESSAGE_BYTES + 1 MiB)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ForeignItem(
            f"{prefix}not a JSON {what}: not UTF-8 text "
            f"(byte {data[exc.start]:#04x} at position {exc.start})"
        ) from None
    _check_nesting(data, f"{prefix}not a JSON {what}: ")
    try:
        return kombu_json.loads(text)
    except json.JSONDecodeError as exc:
        raise ForeignItem(f"{prefix}not a JSON {what}: {exc.msg} at position {exc.pos}") from None
    except Exception as exc:  # noqa: BLE001 - kombu's typed values ({"__type__": ...})
        raise ForeignItem(
            f"{prefix}not a JSON {what}: kombu cannot decode it ({type(exc).__name__})"
        ) from None


def _check_nesting(data: bytes, prefix: str) -> None:
    """Arrays and objects outside strings: at most MAX_DEPTH deep, MAX_CONTAINERS in all."""
    structure = _STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS)
    if len(structure) > 2 * MAX_CONTAINERS:
        raise ForeignItem(f"{prefix}more than {MAX_CONTAINERS:,} arrays and objects")
    depth = 0
    for byte in structure:
        depth += 1 if byte in _OPENERS else -1
        if depth > MAX_DEPTH:
            raise ForeignItem(f"{prefix}nested deeper than {MAX_DEPTH} levels")


def _expect(
    mapping: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    prefix: str,
    *,
    required: bool = True,
    nullable: bool = False,
) -> Any:
    if key not in mapping:
        if required:
            raise ForeignItem(f"{prefix}missing {key}")
        return None
    value = mapping[key]
    if (value is None and nullable) or isinstance(value, kind):
        return value
    expected = _kind_name(kind)
    raise ForeignItem(f"{prefix}{key} is a {_kind(value)}, expected {expected}")


_KINDS = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in _KINDS.items():
        if isinstance(value, kind):
            return name
    return "number" if isinstance(value, float) else type(value).__name__


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_KINDS.get(k, k.__name__) for k in kinds)
