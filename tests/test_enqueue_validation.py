"""Bad input raises a clear InvalidEmail at .delay(), before anything reaches Redis."""

from __future__ import annotations

import json

import pytest
import redis as redis_lib

from mailworker.tasks import (
    HeaderInjection,
    HeaderTooLong,
    InvalidAddress,
    InvalidAttachment,
    InvalidEmail,
    MessageTooLarge,
    UnknownAccount,
    send_email,
)
from tests.conftest import PASSWORD

PROBE_QUEUE = "validation-probe"  # no worker consumes it: whatever is published stays there
PROBE_KEY = f"mailworker:celery:{PROBE_QUEUE}"
VALID = {"to": "ann@example.com", "subject": "Hi", "text": "Hello"}

BAD_INPUTS = [
    pytest.param({"to": [], "subject": "Hi", "text": "x"}, InvalidAddress, id="no-recipient"),
    pytest.param(
        {"to": "not an address", "subject": "Hi", "text": "x"}, InvalidAddress, id="bad-syntax"
    ),
    pytest.param({"to": "ann@example", "subject": "Hi", "text": "x"}, InvalidAddress, id="no-tld"),
    pytest.param(
        {**VALID, "subject": "Hi\r\nBcc: victim@example.com"}, HeaderInjection, id="crlf-subject"
    ),
    pytest.param({**VALID, "headers": {"X-Ok": "a\nb"}}, HeaderInjection, id="lf-header-value"),
    pytest.param(
        {**VALID, "headers": {"X-Bad\r\nName": "v"}}, HeaderInjection, id="crlf-header-name"
    ),
    pytest.param({**VALID, "headers": {"X-Nul": "a\x00b"}}, HeaderInjection, id="nul"),
    pytest.param({**VALID, "subject": "a\x0cb"}, HeaderInjection, id="form-feed"),
    pytest.param(
        {**VALID, "subject": "a\u2028Bcc: v@example.com"},
        HeaderInjection,
        id="unicode-line-separator",
    ),
    pytest.param(
        {**VALID, "headers": {"X-Ünicode": "v"}}, HeaderInjection, id="non-ascii-header-name"
    ),
    pytest.param({**VALID, "subject": "broken \udc80 surrogate"}, InvalidEmail, id="unencodable"),
    pytest.param({**VALID, "account": "nope"}, UnknownAccount, id="unknown-account"),
    pytest.param({"to": "ann@example.com", "subject": "Hi"}, InvalidEmail, id="no-body"),
    pytest.param(
        {
            **VALID,
            "attachments": [
                {"filename": "a.bin", "content_b64": "%%%", "mimetype": "application/pdf"}
            ],
        },
        InvalidAttachment,
        id="attachment-not-base64",
    ),
    pytest.param(
        {
            **VALID,
            "attachments": [
                {"filename": "../etc/passwd", "content_b64": "AA==", "mimetype": "text/plain"}
            ],
        },
        InvalidAttachment,
        id="attachment-path",
    ),
    pytest.param({**VALID, "text": "x" * (10 * 1024 * 1024 + 1)}, MessageTooLarge, id="too-large"),
    pytest.param({**VALID, "priorty": "high"}, InvalidEmail, id="unknown-keyword"),
    pytest.param(
        {**VALID, "headers": {"Sender": "ceo@example.com"}}, InvalidEmail, id="reserved-header"
    ),
    pytest.param({**VALID, "to": 42}, InvalidAddress, id="wrong-type"),
    # re.match with "$" matched before a final newline; every pattern is a fullmatch now.
    pytest.param(
        {**VALID, "headers": {"X-Campaign\n": "v"}}, HeaderInjection, id="header-name-final-lf"
    ),
    pytest.param({**VALID, "headers": {"X-" + "a" * 75: "v"}}, HeaderTooLong, id="long-name"),
    pytest.param({**VALID, "headers": {"X-Long": "v" * 991}}, HeaderTooLong, id="long-value"),
    pytest.param({**VALID, "subject": "é" * 400}, HeaderTooLong, id="long-encoded-subject"),
    pytest.param(
        {**VALID, "to": f'"{"n" * 980}" <ann@example.com>'}, InvalidAddress, id="long-display-name"
    ),
    *(
        pytest.param(
            {**VALID, "attachments": [{"filename": "a", "content_b64": "AA==", "mimetype": t}]},
            InvalidAttachment,
            id=f"mimetype-{t!r}",
        )
        for t in ("text/plain\n", "text/plaín", "text/plain; charset=utf-8", "multipart/mixed")
    ),
    *(
        pytest.param(
            {**VALID, "attachments": [{"filename": name, "content_b64": "AA=="}]},
            HeaderInjection,
            id=f"filename-{name!r}",
        )
        for name in ("a.pdf\n", "a\tb.pdf", "a\x9bb.pdf", "invoice\u202efdp.exe")
    ),
    pytest.param(
        {**VALID, "attachments": [{"filename": "a" * 256, "content_b64": "AA=="}]},
        InvalidAttachment,
        id="filename-too-long",
    ),
]


@pytest.fixture
def probe(redis: redis_lib.Redis):
    redis.delete(PROBE_KEY)
    yield
    redis.delete(PROBE_KEY)


def _job_records(redis: redis_lib.Redis) -> int:
    return sum(1 for _ in redis.scan_iter("mailworker:job:*"))


@pytest.mark.usefixtures("probe")
@pytest.mark.parametrize(("arguments", "error"), BAD_INPUTS)
def test_bad_input_raises_and_nothing_reaches_redis(
    arguments: dict[str, object], error: type[InvalidEmail], redis: redis_lib.Redis
) -> None:
    records_before = _job_records(redis)
    with pytest.raises(error) as caught:
        send_email.delay(**arguments)
    assert isinstance(caught.value, ValueError)
    assert caught.value.field  # names the argument to fix
    with pytest.raises(error):
        send_email.apply_async(kwargs=arguments, queue=PROBE_QUEUE)
    assert redis.llen(PROBE_KEY) == 0
    assert _job_records(redis) == records_before


@pytest.mark.usefixtures("probe")
def test_the_probe_queue_would_see_a_valid_job(redis: redis_lib.Redis) -> None:
    send_email.apply_async(kwargs=VALID, queue=PROBE_QUEUE)
    assert redis.llen(PROBE_KEY) == 1


@pytest.mark.usefixtures("probe")
def test_queued_json_holds_no_password(redis: redis_lib.Redis) -> None:
    result = send_email.apply_async(kwargs={**VALID, "account": "badpass"}, queue=PROBE_QUEUE)
    [raw] = redis.lrange(PROBE_KEY, 0, -1)
    assert PASSWORD.encode() not in raw and b"wrong-password" not in raw
    envelope = json.loads(raw)
    assert envelope["headers"]["id"] == result.id
    assert envelope["content-type"] == "application/json"


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(InvalidEmail, match="keyword"):
        send_email.apply_async(args=("ann@example.com",))


def test_display_names_and_lists_are_accepted(redis: redis_lib.Redis) -> None:
    from mailworker.settings import get_settings
    from mailworker.tasks.validation import build_job

    job = build_job(
        get_settings(),
        {**VALID, "to": ["Ann <ann@example.com>", "bob@example.com"], "cc": "carl@example.com"},
    )
    assert job.to == (("Ann", "ann@example.com"), ("", "bob@example.com"))
    assert job.recipients == ("ann@example.com", "bob@example.com", "carl@example.com")
