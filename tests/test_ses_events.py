"""Amazon SES notifications over SNS: real AWS-signed samples verify, anything unsigned,
tampered, of another topic or with a certificate off an SNS host is refused; a signed SES
bounce and complaint about a message the worker really sent have the same effect as a DSN
or an ARF report in the bounce mailbox."""

from __future__ import annotations

import base64
import datetime
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from mailworker import send_email, status
from mailworker.dev.devserver import DevServer
from mailworker.feedback.ses import SesProvider
from mailworker.feedback.sns import Refused, verified_message
from mailworker.feedback.webhooks import handle
from mailworker.settings import reload_settings
from mailworker.store import keys
from mailworker.store.suppression import entries, suppressed
from tests.helpers import messages_of, wait_for_status

CORPUS = Path(__file__).parent / "corpus" / "sns"
AWS_CERT_URL = "https://sns.us-east-2.amazonaws.com/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"
TEST_CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"
REAL = sorted(CORPUS.glob("notification_*.json"))


def _key_and_cert() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))  # fmt: skip
    return key, cert.public_bytes(serialization.Encoding.PEM)


KEY, CERT = _key_and_cert()
CERTS = {AWS_CERT_URL: (CORPUS / AWS_CERT_URL.rsplit("/", 1)[1]).read_bytes(), TEST_CERT_URL: CERT}


class Fetcher:
    """Stands in for HTTPS to amazonaws.com: the certificates above; records other URLs."""

    def __init__(self) -> None:
        self.visited: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.visited.append(url)
        return CERTS.get(url, b"")


def signed(message: dict[str, Any], version: str = "2") -> bytes:
    """Sign as SNS does (written here from AWS's description, not from the code under test)."""
    if message["Type"] == "Notification":
        fields = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        fields = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    canonical = "".join(f"{k}\n{message[k]}\n" for k in fields if k in message).encode()
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = KEY.sign(canonical, padding.PKCS1v15(), digest)
    return json.dumps({**message, "SignatureVersion": version, "SigningCertURL": TEST_CERT_URL,
                       "Signature": base64.b64encode(signature).decode()}).encode()  # fmt: skip


def notification(ses: dict[str, Any], topic: str = TOPIC) -> dict[str, Any]:
    return {"Type": "Notification", "MessageId": "b5d7a0f2-0000-4c5e-9e5c-000000000001",
            "TopicArn": topic, "Message": json.dumps(ses),
            "Timestamp": "2026-12-03T08:00:00.000Z"}  # fmt: skip


def ses_bounce(message_id: str, address: str, bounce_type: str, subtype: str, status_: str,
               diagnostic: str) -> dict[str, Any]:  # fmt: skip
    return {
        "notificationType": "Bounce",
        "bounce": {"bounceType": bounce_type, "bounceSubType": subtype,
                   "bouncedRecipients": [{"emailAddress": address, "action": "failed",
                                          "status": status_, "diagnosticCode": diagnostic}],
                   "timestamp": "2026-12-03T08:00:00.000Z", "feedbackId": "0100-test"},
        "mail": {"timestamp": "2026-12-03T07:59:58.000Z", "source": "app@example.com",
                 "messageId": "0100018c-ses-own-id", "destination": [address],
                 "commonHeaders": {"messageId": message_id, "subject": "Your receipt"}},
    }  # fmt: skip


def ses_complaint(message_id: str, address: str) -> dict[str, Any]:
    return {
        "eventType": "Complaint",  # a configuration set's event: the other format
        "complaint": {"complainedRecipients": [{"emailAddress": address}],
                      "complaintFeedbackType": "abuse", "feedbackId": "0100-c"},
        "mail": {"messageId": "0100018c-ses-own-id", "destination": [address],
                 "headers": [{"name": "Message-ID", "value": message_id}],
                 "commonHeaders": {"messageId": "<0100018c@email.amazonses.com>"}},
    }  # fmt: skip


@pytest.mark.parametrize("sample", REAL, ids=[p.stem for p in REAL])
def test_real_aws_signed_notifications_verify_and_tampered_ones_do_not(sample: Path) -> None:
    raw = json.loads(sample.read_text())
    topics = [raw["TopicArn"]]
    assert verified_message(sample.read_bytes(), topics, Fetcher())["Message"] == "Hello world"
    tampered = [("Message", "Hello world!"), ("Timestamp", "2022-07-28T22:53:56.086Z"),
                ("Type", "SubscriptionConfirmation"), ("SignatureVersion", "3")]  # fmt: skip
    for field, value in tampered:
        with pytest.raises(Refused):
            verified_message(json.dumps({**raw, field: value}), topics, Fetcher())
    with pytest.raises(Refused, match="topic"):
        verified_message(sample.read_bytes(), [TOPIC], Fetcher())


@pytest.mark.parametrize(
    "change",
    [
        {"SigningCertURL": "https://sns.us-east-2.amazonaws.com.evil.example/x.pem"},
        {"SigningCertURL": "http://sns.us-east-2.amazonaws.com/x.pem"},
        {"SigningCertURL": "https://sns.us-east-2.amazonaws.com/x.txt"},
        {"SigningCertURL": "https://s3.amazonaws.com/sns.us-east-2.amazonaws.com/x.pem"},
        {"Signature": ""},
        {"Signature": "not base64 !"},
    ],
)
def test_certificates_off_sns_hosts_and_broken_signatures_are_refused(
    change: dict[str, str],
) -> None:
    raw = {**json.loads(signed(notification({"notificationType": "Delivery"}))), **change}
    fetcher = Fetcher()
    with pytest.raises(Refused):
        verified_message(json.dumps(raw), [TOPIC], fetcher)
    assert all(url in CERTS for url in fetcher.visited)  # nothing fetched from elsewhere


def test_unsigned_raw_and_foreign_payloads_get_403_and_change_nothing(environment: Any) -> None:
    provider = SesProvider([TOPIC], Fetcher())
    bounce = ses_bounce("<job@example.com>", "x@example.com", "Permanent", "General", "5.1.1", "")
    unsigned = json.dumps(notification(bounce)).encode()
    for body in [unsigned, json.dumps(bounce).encode(), b"", b"\xff", b"[]",
                 signed(notification(bounce, topic=TOPIC + "-other"))]:  # fmt: skip
        assert handle(provider, body).status == 403
    assert suppressed(("x@example.com",)) == set()


def test_a_subscription_confirmation_is_confirmed_only_when_signed(environment: Any) -> None:
    fetcher = Fetcher()
    provider = SesProvider([TOPIC], fetcher)
    confirm = {"Type": "SubscriptionConfirmation", "MessageId": "m-1", "Token": "t0k3n",
               "TopicArn": TOPIC, "Message": "You have chosen to subscribe...",
               "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t0k3n",
               "Timestamp": "2026-12-03T08:00:00.000Z"}  # fmt: skip
    assert handle(provider, json.dumps(confirm).encode()).status == 403
    assert handle(provider, signed(confirm, version="1")).status == 200
    assert fetcher.visited[-1] == confirm["SubscribeURL"] and provider.confirmed == [TOPIC]
    evil = {**confirm, "SubscribeURL": "https://attacker.example/?Action=ConfirmSubscription"}
    assert handle(provider, signed(evil)).status == 403


@pytest.fixture
def events_kept(environment: Any, redis: Any) -> Iterator[None]:
    """EVENTS_TASK set for this process: events stay in the outbox (no relay runs here)."""
    redis.delete(keys.EVENTS)
    os.environ["EVENTS_TASK"] = "app.on_mail_event"
    reload_settings()
    yield
    del os.environ["EVENTS_TASK"]
    reload_settings()
    redis.delete(keys.EVENTS)


def outbox(redis: Any, job_id: str) -> list[str]:
    entries = [{k.decode(): v.decode() for k, v in f.items()} for _, f in redis.xrange(keys.EVENTS)]
    return [e["type"] for e in entries if e["job_id"] == job_id]


@pytest.mark.usefixtures("celery_worker", "events_kept")
def test_an_ses_bounce_and_complaint_act_as_a_dsn_and_an_arf_report(
    starttls_server: DevServer, redis: Any
) -> None:
    gone = send_email.delay(to="ses-gone@example.com", subject="Your receipt", text="x")
    angry = send_email.delay(to="ses-angry@example.com", subject="Your receipt", text="x")
    soft = send_email.delay(to="ses-full@example.com", subject="Your receipt", text="x")
    for job in (gone, angry, soft):
        wait_for_status(job.id, "sent")
    ids = {
        job.id: messages_of(starttls_server, job.id)[0].data.decode() for job in (gone, angry, soft)
    }
    message_id = {job_id: next(line.split(":", 1)[1].strip() for line in data.splitlines()
                               if line.lower().startswith("message-id:"))
                  for job_id, data in ids.items()}  # fmt: skip
    provider = SesProvider([TOPIC], Fetcher())

    hard = ses_bounce(message_id[gone.id], "ses-gone@example.com", "Permanent", "General",
                      "5.1.1", "smtp; 550 5.1.1 user unknown")  # fmt: skip
    assert handle(provider, signed(notification(hard))).status == 200
    assert handle(provider, signed(notification(hard))).status == 200  # SNS retried: no repeat
    (entry,) = entries(("ses-gone@example.com",))
    assert entry is not None and (entry.type, entry.source, entry.status) == (
        "hard-bounce",
        "ses",
        "5.1.1",
    )
    assert status(gone.id)["recipients"] == {"ses-gone@example.com": "bounced 5.1.1 hard"}  # type: ignore[index]
    assert outbox(redis, gone.id) == ["queued", "sent", "bounced"]  # the bounce once

    full = ses_bounce(message_id[soft.id], "ses-full@example.com", "Transient", "MailboxFull",
                      "4.2.2", "smtp; 452 4.2.2 mailbox full")  # fmt: skip
    assert handle(provider, signed(notification(full))).status == 200
    assert suppressed(("ses-full@example.com",)) == set()
    assert entries(("ses-full@example.com",), "bulk") == [None]  # one soft bounce: counted

    complaint = ses_complaint(message_id[angry.id], "ses-angry@example.com")
    assert handle(provider, signed(notification(complaint), version="1")).status == 200
    (bulk,) = entries(("ses-angry@example.com",), "bulk")
    assert bulk is not None and (bulk.type, bulk.source) == ("complaint", "ses")
    assert status(angry.id)["recipients"] == {"ses-angry@example.com": "complained abuse"}  # type: ignore[index]
    assert outbox(redis, angry.id) == ["queued", "sent", "complained"]
    assert redis.hget(keys.stats("default"), "complained") is not None
