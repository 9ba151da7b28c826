"""Anything pushed onto a queue list is a dead letter with a reason; the worker goes on.

Anyone who can write to the Redis can LPUSH any bytes onto ``mailworker:celery:<queue>``.
Each item below once stopped a worker ("Unrecoverable error") or vanished without a trace.
Here they go onto the queue of a running worker (the in-process one on ``email``, a real
``celery worker`` process on ``bulk``), followed by one genuine job: the job is delivered,
every item is a dead letter that keeps its first bytes and says what was wrong, and the
worker process is still running.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis as redis_lib
from hypothesis import given
from hypothesis import strategies as st

from mailworker.dev.devserver import DevServer
from mailworker.store import dead
from mailworker.tasks import send_email
from mailworker.tasks.app import queue_key
from mailworker.worker.queue_items import ForeignItem, item_limit, screen
from tests.helpers import messages_of, wait_for_status, worker_process

KEPT = 4096  # bytes of a foreign item its dead letter keeps


def _envelope(**changes: Any) -> bytes:
    """A kombu envelope as a Redis writer could push it, with ``changes`` applied."""
    envelope: dict[str, Any] = {
        "body": base64.b64encode(b'[[], {"job": {}}, {}]').decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"id": str(uuid.uuid4()), "task": "mailworker.send_email", "lang": "py"},
        "properties": {
            "delivery_tag": str(uuid.uuid4()),
            "body_encoding": "base64",
            "delivery_info": {"exchange": "", "routing_key": "email"},
            "priority": 0,
        },
    }
    envelope.update(changes)
    return json.dumps(envelope).encode()


# item → words its dead letter's reason must contain
HUGE = b"Huge-Tapir-" + b"x" * (10 * 1024 * 1024)
ITEMS: dict[bytes, str] = {
    b"1": "not an object",
    b"[" * 100_000: "nested deeper than",
    b"{}": "missing",
    b"\xff\xfe Invalid-Utf8-Ibis \x80": "not utf-8",
    HUGE: "not a json message envelope",  # larger than the limit where MAX_MESSAGE_BYTES is low
    b'"Just-A-String-Okra"': "not an object",
    b'{"__type__": "Kombu-Typed-Quail", "__value__": 1}': "kombu cannot decode",
    _envelope(body=5, headers=["Wrong-Types-Wombat"], properties="x"): "body is a number",
    _envelope(headers={"id": "Headers-Without-Task-Gnu"}): "no 'task'",
    _envelope(headers={"id": "Eta-Yak", "task": "mailworker.send_email", "eta": "soon"}): "eta",
    _envelope(headers={"id": "Limit-Emu", "task": "mailworker.send_email", "timelimit": 5}): (
        "timelimit"
    ),
    _envelope(properties={"Properties-Without-Tag-Ox": 1}): "delivery_tag",
    _envelope(body="Not-Base64-Eland!!"): "base64",
    _envelope(body=base64.b64encode(b"[" * 50_000).decode()): "nested deeper than",
    _envelope(body=base64.b64encode(b'"Body-Not-A-Triple-Lynx"').decode()): "not a task body",
}


def _raw_kept(letter: dict[str, Any]) -> bytes:
    return base64.b64decode(letter["payload"]["raw_b64"])


def _letters_since(started: float, queue: str) -> list[dict[str, Any]]:
    return [
        d
        for d in dead.list_dead(1000)
        if float(d["dead_at"]) >= started and d["queue"] == queue and "raw_b64" in d["payload"]
    ]


def _push_and_check(redis: redis_lib.Redis, queue: str, server: DevServer, **expected: str) -> None:
    started = time.time()
    for item in ITEMS:
        redis.lpush(queue_key(queue), item)
    good = send_email.apply_async(
        kwargs={"to": "ann@example.com", "subject": "after", "text": "t"}, queue=queue
    )
    wait_for_status(good.id, "sent", timeout=60)
    assert len(messages_of(server, good.id)) == 1
    deadline = time.monotonic() + 20
    while len(_letters_since(started, queue)) < len(ITEMS) and time.monotonic() < deadline:
        time.sleep(0.1)
    letters = {_raw_kept(d): d for d in _letters_since(started, queue)}
    for item, words in ITEMS.items():
        words = expected.get("huge", words) if item is HUGE else words
        letter = letters.get(item[:KEPT])
        assert letter is not None, f"no dead letter for {item[:60]!r}"
        assert words in letter["reason"].lower(), (item[:60], letter["reason"])
    assert redis.llen(queue_key(queue)) == 0


@contextmanager
def _bulk_worker(environment: dict[str, str]) -> Iterator[Any]:
    # A low MAX_MESSAGE_BYTES: the 10 MB item is over this worker's size limit (9 MiB).
    env = {**environment, "MAX_MESSAGE_BYTES": str(1024 * 1024)}
    with worker_process("bulk", env, name="-foreign") as process:
        yield process


@pytest.mark.slow
@pytest.mark.usefixtures("celery_worker")
def test_foreign_items_on_the_email_queue_are_dead_letters_and_the_worker_goes_on(
    redis: redis_lib.Redis, starttls_server: DevServer
) -> None:
    _push_and_check(redis, "email", starttls_server)
    # And the worker is still consuming: the next job is delivered too.
    again = send_email.delay(to="ann@example.com", subject="still here", text="t")
    wait_for_status(again.id, "sent")


@pytest.mark.slow
def test_foreign_items_on_the_bulk_queue_of_a_worker_process_are_dead_letters(
    redis: redis_lib.Redis, starttls_server: DevServer, environment: dict[str, str]
) -> None:
    with _bulk_worker(environment) as process:
        _push_and_check(redis, "bulk", starttls_server, huge="larger than the 9,437,184")
        # Every bad item is a dead letter and the queue is empty: the worker read them all.
        assert process.poll() is None, "the worker process stopped"


def test_what_the_producer_publishes_passes_the_screen(redis: redis_lib.Redis) -> None:
    queue = f"unserved-{uuid.uuid4().hex[:8]}"
    send_email.apply_async(
        kwargs={"to": "ann@example.com", "subject": "s", "text": "t", "idempotency_key": queue},
        queue=queue,
    )
    [item] = redis.lrange(queue_key(queue), 0, -1)
    redis.delete(queue_key(queue))
    screen(item, item_limit(10 * 1024 * 1024))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_the_screen_says_why_or_lets_pass_and_never_fails_otherwise(item: bytes) -> None:
    try:
        screen(item, 4096)
    except ForeignItem as exc:
        assert exc.reason
