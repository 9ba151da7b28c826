"""Bulk campaigns end to end: real Redis, a real `bulk` worker process, a real TLS SMTP server."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mailworker.delivery.message import build_envelope
from mailworker.dev.devserver import DevServer, RecordingSMTP, Reply
from mailworker.settings import SettingsError, get_settings, load_settings
from mailworker.store.job import EmailJob
from mailworker.store.suppression import SUPPRESSED, SUPPRESSED_BULK, suppress
from mailworker.tasks.addresses import parse_mailbox
from mailworker.tasks.campaign import (
    CampaignError,
    CampaignTemplate,
    Renderer,
    campaign_errors,
    campaign_status,
    cancel,
    pause,
    render_job,
    resume,
    start_campaign,
)
from mailworker.tasks.errors import InvalidEmail
from mailworker.tasks.unsubscribe import InvalidToken, make_token, unsubscribe, verify_token
from tests.helpers import extra_account, wait_until, worker_process
from tests.hostile import address, benign, check_received, header_name, header_value, hostile

TEMPLATE = {
    "subject": "Hello {{ first_name }}",
    "text": "Dear {{ first_name }}, our {{ season }} sale starts now.",
    "html": "<p>Dear {{ first_name }}</p>",
}


@pytest.fixture(scope="module")
def bulk_worker(environment: dict[str, str], starttls_server: DevServer) -> Iterator[DevServer]:
    paced = starttls_server.url() + "?rate=50/s"
    hundred = starttls_server.url() + "?rate=100/s"
    env = {"SMTP_URL_PACED": paced, "SMTP_URL_HUNDRED": hundred}
    with extra_account("paced", paced), extra_account("hundred", hundred):
        with worker_process("bulk", env):
            yield starttls_server


def rows(count: int, prefix: str, **extra: str) -> list[dict[str, str]]:
    return [
        {"email": f"{prefix}{i}@example.com", "first_name": f"Name{i}", "season": "winter", **extra}
        for i in range(count)
    ]


def messages_of_campaign(server: DevServer, campaign_id: str) -> list[Any]:
    marker = f"<{campaign_id}-".encode()
    return [m for m in server.messages if marker in m.data.split(b"\r\n\r\n")[0]]


def wait_until_done(campaign_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    record = campaign_status(campaign_id)
    while time.monotonic() < deadline:
        record = campaign_status(campaign_id)
        if record and record["total"] is not None and record["done"] >= record["total"]:
            return record
        time.sleep(0.2)
    raise AssertionError(f"campaign {campaign_id} did not finish: {record}")


def settled(campaign_id: str) -> int:
    """The sent count once it has stopped moving for a second."""
    last, since = -1, time.monotonic()
    while time.monotonic() - since < 1.0:
        sent = campaign_status(campaign_id)["sent"]
        if sent != last:
            last, since = sent, time.monotonic()
        time.sleep(0.1)
    return last


@pytest.mark.slow
def test_a_5000_recipient_csv_campaign(bulk_worker: DevServer, tmp_path: Path) -> None:
    path = tmp_path / "recipients.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["email", "first_name", "season"])
        writer.writeheader()
        writer.writerows(rows(5000, "big"))
    for i in range(0, 100, 10):
        suppress(f"big{i}@example.com", "unsubscribed earlier")
    with path.open(newline="") as handle:
        campaign_id = start_campaign(TEMPLATE, csv.DictReader(handle))
    record = wait_until_done(campaign_id, timeout=180)
    assert (record["total"], record["sent"], record["suppressed"]) == (5000, 4990, 10)
    assert record["failed"] == record["invalid"] == record["deferred"] == 0
    messages = messages_of_campaign(bulk_worker, campaign_id)
    per_recipient = Counter(m.rcpt_tos[0] for m in messages)
    assert len(per_recipient) == 4990 and set(per_recipient.values()) == {1}
    assert "big10@example.com" not in per_recipient
    for message in messages[::97]:  # every 97th: personalised, with working unsubscribe
        parsed, recipient = message.message, message.rcpt_tos[0]
        number = recipient.removeprefix("big").split("@")[0]
        assert parsed["Subject"] == f"Hello Name{number}"
        assert f"Dear Name{number}, our winter sale" in parsed.get_body(("plain",)).get_content()
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert parsed["List-Id"] == f"<{campaign_id}.example.com>"
        token = re.search(r"token=([\w\-.]+)>", parsed["List-Unsubscribe"]).group(1)
        assert verify_token(token) == (campaign_id, recipient)
        assert "mailto:unsubscribe@app.example.com" in parsed["List-Unsubscribe"]
        # Providers read the raw header: the signed URL travels as is, never RFC 2047-encoded.
        assert b"\r\nList-Unsubscribe: <https://app.example.com/unsubscribe" in message.data


def test_a_template_error_stops_the_campaign_before_anything_is_queued(
    bulk_worker: DevServer,
) -> None:
    with pytest.raises(CampaignError, match="template error in subject"):
        start_campaign({"subject": "Hi {{ first_name", "text": "x"}, rows(5, "tpl"))
    with pytest.raises(CampaignError, match="row 1: .*'coupon' is undefined"):
        start_campaign({"subject": "Hi", "text": "{{ coupon }}"}, rows(5, "tpl"), campaign_id="c1")
    assert campaign_status("c1") is None


@pytest.mark.parametrize(
    "campaign_id", ["c1\r\nBcc: x@example.com", "c1\n", "c}1", "c 1", "c1:2", "c..1"]
)
def test_a_campaign_id_that_could_break_a_message_id_is_refused(
    environment: dict[str, str], campaign_id: str
) -> None:
    template = {**TEMPLATE, "list_id": "news.example.com"}  # the id is in no other header
    with pytest.raises(CampaignError, match="campaign id"):
        start_campaign(template, rows(1, "cid"), campaign_id=campaign_id)


def test_a_bad_row_is_recorded_and_the_rest_are_sent(bulk_worker: DevServer) -> None:
    recipients = rows(60, "rowy")
    recipients[3]["email"] = "not an address"
    del recipients[40]["first_name"]  # past the rows checked at start
    campaign_id = start_campaign(TEMPLATE, recipients, chunk_size=25)
    record = wait_until_done(campaign_id)
    assert (record["sent"], record["invalid"], record["failed"]) == (58, 1, 1)
    errors = campaign_errors(campaign_id)
    assert errors[3].startswith("invalid address") and "first_name" in errors[40]
    assert len(messages_of_campaign(bulk_worker, campaign_id)) == 58


def test_an_unsubscribe_leaves_one_list_not_the_others_nor_receipts(
    bulk_worker: DevServer, celery_worker: Any
) -> None:
    """The link in a "news" campaign suppresses the reader for the news list: the next news
    campaign skips them, an "offers" campaign and a receipt still reach them."""
    from mailworker.tasks import send_email
    from tests.helpers import messages_of, wait_for_status

    readers = rows(3, "lister")
    news = start_campaign({**TEMPLATE, "list_id": "news.example.com"}, readers)
    wait_until_done(news)
    assert unsubscribe(make_token(news, "lister1@example.com")) == (news, "lister1@example.com")

    again = wait_until_done(start_campaign({**TEMPLATE, "list_id": "news.example.com"}, readers))
    offers = wait_until_done(start_campaign({**TEMPLATE, "list_id": "offers.example.com"}, readers))
    assert (again["sent"], again["suppressed"]) == (2, 1)
    assert (offers["sent"], offers["suppressed"]) == (3, 0)
    receipt = send_email.delay(to="lister1@example.com", subject="Receipt", text="x")
    wait_for_status(receipt.id, "sent")
    assert len(messages_of(bulk_worker, receipt.id)) == 1


def test_a_complaint_about_a_campaign_message_unsubscribes_from_its_list(
    bulk_worker: DevServer,
) -> None:
    """An ARF report about one campaign recipient's message (Message-ID <campaign>-<row>@):
    that recipient is suppressed from campaigns and from the list, counted complained."""
    from mailworker.feedback.apply import apply_report
    from mailworker.feedback.reports import read_report
    from mailworker.store.suppression import entries
    from tests.bounce_mail import arf

    readers = rows(2, "complainer")
    campaign_id = start_campaign({**TEMPLATE, "list_id": "deals.example.com"}, readers)
    wait_until_done(campaign_id)
    [copy] = [m for m in messages_of_campaign(bulk_worker, campaign_id)
              if m.rcpt_tos == ("complainer0@example.com",)]  # fmt: skip
    report = read_report(arf(copy.data.decode(), "complainer0@example.com"))
    [applied] = apply_report(report, "arf")
    assert (applied.effect, applied.job_id) == ("new", f"{campaign_id}-0")
    assert apply_report(report, "arf")[0].effect == "repeat"
    (bulk,) = entries(["complainer0@example.com"], "bulk")
    (listed,) = entries(["complainer0@example.com"], "list:deals.example.com")
    assert bulk is not None and listed is not None and listed.type == "unsubscribe"
    record = campaign_status(campaign_id)
    assert record is not None and (record["complained"], record["complaint_rate"]) == (1, 0.5)


def _arrivals(server: DevServer, campaign_id: str) -> list[float]:
    return sorted(m.received_at for m in messages_of_campaign(server, campaign_id))


def _batch_records(redis: Any, campaign_id: str) -> dict[str, tuple[str, str]]:
    """Each batch's (state, updated_at): a task that touches a batch changes them."""
    found = {}
    for key in redis.scan_iter(match=f"mailworker:job:{campaign_id}:*"):
        state, updated = redis.hmget(key, "state", "updated_at")
        found[key.decode()] = (state.decode(), updated.decode())
    return found


def _parked_or_done(redis: Any, campaign_id: str) -> bool:
    records = _batch_records(redis, campaign_id)
    return bool(records) and {state for state, _ in records.values()} <= {"paused", "sent"}


@pytest.mark.slow
def test_pause_and_cancel_stop_a_campaign_within_a_second(
    bulk_worker: DevServer, redis: Any
) -> None:
    paused = start_campaign(TEMPLATE, rows(600, "pause"), account="hundred", chunk_size=50)
    wait_until(lambda: campaign_status(paused)["sent"] >= 100, 60, "100 sent")
    pause(paused)
    stopped_at = time.time()
    # Every batch parked or done (none queued or running): nothing more can be sent.
    wait_until(lambda: _parked_or_done(redis, paused), 30, "every batch parked or done")
    late = [t for t in _arrivals(bulk_worker, paused) if t > stopped_at + 1.0]
    assert late == []  # only the sessions already in a transaction finished
    # A paused campaign costs nothing: its batches are parked, no task touches them.
    before = _batch_records(redis, paused)
    time.sleep(2)  # a window to watch: no task may touch a parked batch in it
    assert _batch_records(redis, paused) == before
    assert {state for state, _ in before.values()} <= {"paused", "sent"}
    sent_while_paused = campaign_status(paused)["sent"]
    assert sent_while_paused < 600
    resume(paused)
    assert wait_until_done(paused)["sent"] == 600
    per_recipient = Counter(m.rcpt_tos[0] for m in messages_of_campaign(bulk_worker, paused))
    assert len(per_recipient) == 600 and set(per_recipient.values()) == {1}

    cancelled = start_campaign(TEMPLATE, rows(600, "cancel"), account="hundred", chunk_size=50)
    wait_until(lambda: campaign_status(cancelled)["sent"] >= 100, 60, "100 sent")
    cancel(cancelled)
    stopped_at = time.time()
    record = wait_until_done(cancelled, timeout=30)
    assert [t for t in _arrivals(bulk_worker, cancelled) if t > stopped_at + 1.0] == []
    sent = len(messages_of_campaign(bulk_worker, cancelled))
    assert record["sent"] == sent < 600 and record["cancelled"] == 600 - sent


def test_a_throttling_reply_during_a_campaign_lowers_the_accounts_rate(
    bulk_worker: DevServer,
) -> None:
    from mailworker.delivery.ratelimit import usage
    from mailworker.settings import get_settings

    throttled: set[str] = set()

    def throttle_once(command: str, argument: object, _: RecordingSMTP) -> Reply | None:
        if command == "RCPT" and "throttle" in str(argument) and str(argument) not in throttled:
            throttled.add(str(argument))
            return Reply("421 4.7.0 Try again later, closing connection")
        return None

    bulk_worker.fault = throttle_once
    try:
        campaign_id = start_campaign(TEMPLATE, rows(10, "throttle"), account="paced")
        record = wait_until_done(campaign_id, timeout=90)
    finally:
        bulk_worker.fault = None
    assert record["sent"] == 10  # retried, not lost
    factor, _ = usage(get_settings().account("paced"), cooldown=3600)
    assert factor < 1.0  # the bulk path slowed the account down, as a transactional 421 does


def test_a_rerun_with_reordered_rows_sends_nobody_twice_and_skips_nobody(
    bulk_worker: DevServer,
) -> None:
    people = rows(90, "resorted")
    first = start_campaign(TEMPLATE, people[:60], campaign_id="resorted", chunk_size=20)
    wait_until_done(first)
    # The same campaign again with the list re-sorted, 30 more people and one twice.
    again = [*reversed(people), people[5]]
    start_campaign(TEMPLATE, again, campaign_id="resorted", chunk_size=20)
    wait_until(
        lambda: campaign_status("resorted")["sent"] == 90,
        90,
        "everyone on either list got the campaign",
    )
    record = settled_record("resorted")
    per_recipient = Counter(m.rcpt_tos[0] for m in messages_of_campaign(bulk_worker, "resorted"))
    assert len(per_recipient) == 90 and set(per_recipient.values()) == {1}
    assert record["sent"] == 90 and record["failed"] == 0


def settled_record(campaign_id: str) -> dict[str, Any]:
    """The campaign's counters once no batch of it is queued or running any more."""
    from mailworker.store import keys
    from mailworker.store.client import get_redis

    client = get_redis()

    def idle() -> bool:
        running = [k for k in client.zrange(keys.JOBS_LEASED, 0, -1) if k.startswith(campaign_id)]
        queued = [k for k in client.zrange(keys.JOBS_QUEUED, 0, -1) if k.startswith(campaign_id)]
        return not running and not queued

    wait_until(idle, 60, "the campaign's batches ended")
    record = campaign_status(campaign_id)
    assert record is not None
    return record


@pytest.mark.slow
def test_a_producer_killed_half_way_resumes_without_duplicates_or_gaps(
    bulk_worker: DevServer, tmp_path: Path
) -> None:
    path, text = tmp_path / "list.csv", tmp_path / "body.txt"
    text.write_text("Dear {{ first_name }}")
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["email", "first_name"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows(1000, "kill"))
    command = [
        sys.executable, "-m", "mailworker.cli", "campaign", "start", str(path),
        "--subject", "Hi {{ first_name }}", "--text", str(text), "--id", "killed-producer",
        "--chunk-size", "20", "--account", "paced",
    ]  # fmt: skip
    producer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while (campaign_status("killed-producer") or {}).get("queued", 0) < 300:
        time.sleep(0.01)
    producer.send_signal(signal.SIGKILL)
    producer.wait(10)
    assert not campaign_status("killed-producer")["enqueued"]
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == "killed-producer"
    record = wait_until_done("killed-producer")
    assert record["sent"] == record["queued"] == 1000
    per_recipient = Counter(
        m.rcpt_tos[0] for m in messages_of_campaign(bulk_worker, "killed-producer")
    )
    assert len(per_recipient) == 1000 and set(per_recipient.values()) == {1}


def test_an_unsubscribe_token_names_one_recipient_of_one_campaign(
    environment: dict[str, str],
) -> None:
    token = make_token("spring", "Ann@Example.com")
    assert verify_token(token) == ("spring", "ann@example.com")
    body, signature = token.split(".")
    other = make_token("spring", "bob@example.com").split(".")[0]
    for forged in (f"{other}.{signature}", f"{body}.{signature[:-2]}xx", "garbage", ""):
        with pytest.raises(InvalidToken):
            verify_token(forged)
    assert unsubscribe(token) == ("spring", "ann@example.com")
    from mailworker.store.suppression import entries, suppressed

    # No campaign "spring" is stored: the unsubscribe covers every campaign, and still no
    # transactional mail (a password reset reaches an unsubscribed reader).
    (entry,) = entries(("ann@example.com",), "bulk")
    assert entry is not None and (entry.type, entry.source) == ("unsubscribe", "link")
    assert suppressed(("ann@example.com",)) == set()


def test_scheduled_mail_waits_in_redis_not_in_a_worker(
    bulk_worker: DevServer, celery_worker: Any, redis: Any
) -> None:
    from mailworker.store.lifecycle import due_at
    from mailworker.tasks import send_email
    from tests.helpers import wait_for_status

    send_at = time.time() + 2
    single = send_email.delay(to="later@example.com", subject="s", text="t", send_at=send_at)
    campaign_id = start_campaign(TEMPLATE, rows(30, "sched"), send_at=send_at)
    assert due_at(single.id) == pytest.approx(send_at)
    [batch] = [
        k.decode().rsplit(":", 2)[-2:] for k in redis.scan_iter(f"mailworker:job:{campaign_id}:*")
    ]
    assert due_at(":".join(batch)) == pytest.approx(send_at)
    assert float(wait_for_status(single.id, "scheduled")["send_at"]) == pytest.approx(send_at)
    assert messages_of_campaign(bulk_worker, campaign_id) == []
    assert wait_for_status(single.id, "sent", timeout=20)
    assert wait_until_done(campaign_id, timeout=20)["sent"] == 30
    assert min(m.received_at for m in messages_of_campaign(bulk_worker, campaign_id)) >= send_at


def test_send_at_must_be_a_moment(environment: dict[str, str]) -> None:
    import datetime

    from mailworker.tasks import InvalidEmail, send_email

    for bad in (datetime.datetime(2030, 1, 1), "tomorrow", float("nan")):
        with pytest.raises(InvalidEmail) as error:
            send_email.delay(to="a@example.com", subject="s", text="t", send_at=bad)
        assert error.value.field == "send_at"


def test_transactional_mail_may_opt_out_of_the_suppression_list(
    starttls_server: DevServer, celery_worker: Any
) -> None:
    from mailworker.tasks import send_email
    from tests.helpers import messages_of, wait_for_status

    suppress("bounced-once@example.com", "hard bounce last year")
    kept = send_email.delay(to="bounced-once@example.com", subject="news", text="x")
    reset = send_email.delay(
        to="bounced-once@example.com", subject="reset", text="x", ignore_suppression=True
    )
    assert wait_for_status(kept.id, "failed")["recipients"] == {
        "bounced-once@example.com": "bounced suppressed"
    }
    wait_for_status(reset.id, "sent")
    assert messages_of(starttls_server, kept.id) == []
    assert len(messages_of(starttls_server, reset.id)) == 1
    with pytest.raises(ValueError, match="True or False"):
        send_email.delay(to="a@example.com", subject="s", text="t", ignore_suppression="yes")


HOSTILE_TEMPLATE = {
    "subject": "Hello {{ first_name }}",
    "text": "Dear {{ first_name }}, our {{ season }} sale starts now.",
    "html": "<p>Dear {{ first_name }}</p>",
}
row_value = hostile(benign)
template_extra = st.fixed_dictionaries(
    {},
    optional={
        "headers": st.dictionaries(header_name, header_value, max_size=2),
        "list_id": hostile(st.sampled_from(["news.example.com", "a b"])),
    },
)


def _rendered(
    campaign_id: str, template: CampaignTemplate, index: int, row: dict[str, Any]
) -> EmailJob:
    """The job the worker renders for one row (ValueError or InvalidEmail if it cannot)."""
    _, address_ = parse_mailbox("to", row["email"])
    variables = {k: v for k, v in row.items() if k != "email"}
    renderer = Renderer(template)
    settings_ = get_settings()
    return render_job(
        campaign_id, template, renderer, "default", index, address_, variables, settings_
    )


@settings(max_examples=300, deadline=None)
@given(
    email=address,
    first_name=row_value,
    season=row_value,
    extra=template_extra,
)
def test_hostile_rows_render_to_a_refusal_or_an_intact_message(
    environment: dict[str, str], email: Any, first_name: str, season: str, extra: dict[str, Any]
) -> None:
    template = CampaignTemplate(**HOSTILE_TEMPLATE, **extra)
    row = {"email": email, "first_name": first_name, "season": season}
    try:
        job = _rendered("hostile", template, 3, row)
    except ValueError as exc:  # InvalidEmail is one: recorded against the row, not sent
        event(f"refused: {type(exc).__name__}")
        return
    event("rendered")
    check_received(build_envelope(job).data, job)


@pytest.mark.slow
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows_=st.lists(st.tuples(row_value, row_value), min_size=1, max_size=4),
    extra=template_extra,
)
def test_hostile_rows_through_the_bulk_worker_arrive_intact_or_are_recorded(
    bulk_worker: DevServer, rows_: list[tuple[str, str]], extra: dict[str, Any]
) -> None:
    template = CampaignTemplate(**HOSTILE_TEMPLATE, **extra)
    recipients = [{"email": "first@example.com", "first_name": "Ann", "season": "spring"}]
    recipients += [
        {"email": f"h{i}@example.com", "first_name": name, "season": season}
        for i, (name, season) in enumerate(rows_, start=1)
    ]
    try:
        campaign_id = start_campaign(template, recipients, check_rows=1)
    except CampaignError:  # the template (its headers, its List-Id) is refused at start
        return
    wait_until_done(campaign_id, timeout=60)
    errors = campaign_errors(campaign_id)
    messages = messages_of_campaign(bulk_worker, campaign_id)
    received = {m.message["Message-ID"]: m for m in messages}
    assert len(received) == len(messages)  # one message per row at most
    for index, row in enumerate(recipients):
        message_id = f"<{campaign_id}-{index}@example.com>"
        try:
            job = _rendered(campaign_id, template, index, row)
        except (ValueError, InvalidEmail):
            event("row refused")
            assert errors[index].startswith("could not render") and message_id not in received
            continue
        event("row sent")
        check_received(received[message_id].data, job)


@pytest.mark.parametrize(
    "token",
    [None, b"", 42, ["a.b"], "", ".", "a.b.c", "\x00.\x00", "ü.ü", "x" * 100_000, "@@.@@"],
)
def test_anything_but_a_genuine_token_is_an_invalid_token(
    token: object, environment: dict[str, str], redis: Any
) -> None:
    """What an endpoint may pass on: a missing query parameter (None), bytes, any text."""
    with pytest.raises(InvalidToken):
        unsubscribe(token)  # type: ignore[arg-type]
    genuine = make_token("spring", "carl@example.com")
    with pytest.raises(InvalidToken):
        unsubscribe(genuine.encode())  # type: ignore[arg-type]
    assert redis.hlen(SUPPRESSED) == 0 and redis.hlen(SUPPRESSED_BULK) == 0


@pytest.mark.parametrize("secret", ["Tiny-Secret-Gecko", "x" * 31, "é" * 15])
def test_the_unsubscribe_secret_is_at_least_32_bytes(secret: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"UNSUBSCRIBE_SECRET": secret})
    assert caught.value.variable == "UNSUBSCRIBE_SECRET" and "32 bytes" in str(caught.value)
    assert secret not in str(caught.value)
    assert load_settings({"UNSUBSCRIBE_SECRET": "é" * 16}).unsubscribe.secret is not None
