"""Django's own mail API through mailworker's backend, with a real Django settings module."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mailworker.delivery.message import build_envelope
from mailworker.dev.devserver import DevServer, ReceivedMessage
from mailworker.settings import get_settings
from mailworker.store.job import EmailJob, UndecodableJob
from mailworker.tasks.errors import InvalidEmail
from mailworker.tasks.validation import build_job
from tests.hostile import (
    address,
    benign,
    broken,
    check_received,
    filename,
    header_name,
    header_value,
    hostile,
    mimetype,
)

django = pytest.importorskip("django")


def arrived(server: DevServer, *addresses: str, timeout: float = 20) -> dict[str, ReceivedMessage]:
    """The message each of ``addresses`` received, once all have arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        received = {r: m for m in server.messages for r in m.rcpt_tos}
        if all(address in received for address in addresses):
            return received
        time.sleep(0.05)
    raise AssertionError(f"not all of {addresses} arrived")


@pytest.fixture(scope="module")
def django_settings() -> Iterator[None]:
    # Set for this module only: worker processes spawned by later tests must not inherit it.
    saved = os.environ.get("DJANGO_SETTINGS_MODULE")
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.django_project.settings"
    django.setup()
    yield
    if saved is None:
        del os.environ["DJANGO_SETTINGS_MODULE"]
    else:
        os.environ["DJANGO_SETTINGS_MODULE"] = saved


def test_send_mail_and_alternatives_with_attachments_go_through_the_queue(
    django_settings: None, starttls_server: DevServer, celery_worker: Any
) -> None:
    from django.core import mail

    from mailworker.tasks.django import EmailBackend

    assert isinstance(mail.get_connection(), EmailBackend)
    assert mail.send_mail("Plain", "Plain body", None, ["dj-plain@example.com"]) == 1
    message = mail.EmailMultiAlternatives(
        "Receipt",
        "Thanks for your order.",
        "Orders <orders@example.com>",
        ["dj-rich@example.com"],
        cc=["dj-cc@example.com"],
        bcc=["dj-bcc@example.com"],
        reply_to=["help@example.com"],
        headers={"X-Order": "42"},
    )
    message.attach_alternative("<p>Thanks for your <b>order</b>.</p>", "text/html")
    message.attach("receipt.pdf", b"%PDF-1.4 fake", "application/pdf")
    assert message.send() == 1

    received = arrived(starttls_server, "dj-plain@example.com", "dj-rich@example.com")
    plain = received["dj-plain@example.com"].message
    assert plain["Subject"] == "Plain" and plain["From"] == "Shop <shop@example.com>"
    rich = received["dj-rich@example.com"]
    assert sorted(rich.rcpt_tos) == [f"dj-{n}@example.com" for n in ("bcc", "cc", "rich")]
    parsed = rich.message
    assert parsed["Reply-To"] == "help@example.com" and parsed["X-Order"] == "42"
    assert "Bcc" not in parsed
    assert "<b>order</b>" in parsed.get_body(("html",)).get_content()
    [attachment] = list(parsed.iter_attachments())
    assert attachment.get_filename() == "receipt.pdf"
    assert attachment.get_content() == b"%PDF-1.4 fake"


def test_invalid_addresses_fail_at_send_unless_silenced(django_settings: None) -> None:
    from django.core import mail

    from mailworker.tasks import InvalidEmail

    with pytest.raises(InvalidEmail):
        mail.send_mail("Hi", "body", None, ["not an address"])
    assert mail.send_mail("Hi", "body", None, ["not an address"], fail_silently=True) == 0


def _django_message(fields: dict[str, Any]) -> Any:
    """A Django message as an app would build it; None if Django itself refuses the input."""
    from django.core import mail

    try:
        message = mail.EmailMultiAlternatives(
            fields["subject"],
            fields["body"],
            fields["from_email"],
            fields["to"],
            bcc=fields["bcc"],
            cc=fields["cc"],
            reply_to=fields["reply_to"],
            headers=fields["headers"],
        )
        if fields["html"] is not None:
            message.attach_alternative(fields["html"], "text/html")
        for name, content, kind in fields["attachments"]:
            message.attach(name, content, kind)
    except (ValueError, TypeError):
        return None
    return message


# Half plain good addresses, so that most draws get past the addresses to the message.
some_address = st.sampled_from(["ann@example.com", "Ann <ann@example.com>"]) | address
django_fields = st.fixed_dictionaries(
    {
        "subject": hostile(benign),
        "body": benign | broken(benign),
        "html": st.none() | benign | broken(benign),
        "from_email": st.none() | some_address,
        "to": st.lists(some_address, min_size=1, max_size=2),
        "cc": st.lists(some_address, max_size=1),
        "bcc": st.lists(some_address, max_size=1),
        "reply_to": st.lists(some_address, max_size=1),
        "headers": st.dictionaries(header_name, header_value, max_size=2),
        "attachments": st.lists(
            st.tuples(
                filename,
                st.binary(max_size=100) | st.text(max_size=20) | st.just("\ud800"),
                st.none() | mimetype,
            ),
            max_size=2,
        ),
    }
)


def _expected_job(message: Any) -> EmailJob:
    from mailworker.tasks.django import EmailBackend

    return build_job(get_settings(), EmailBackend().arguments(message))


@settings(max_examples=300, deadline=None)
@given(fields=django_fields)
def test_hostile_django_messages_are_refused_or_built_intact(
    django_settings: None, environment: dict[str, str], fields: dict[str, Any]
) -> None:
    message = _django_message(fields)
    if message is None:
        return
    try:
        job = _expected_job(message)
    except InvalidEmail as exc:
        event(f"refused: {exc.field.split('[')[0]}")
        return
    event("accepted")
    # The backend passes Django's values through; the producer's checks hold for them too.
    assert job.subject == message.subject
    assert [a.filename for a in job.attachments] == [
        a.filename.strip() for a in message.attachments
    ]
    check_received(build_envelope(job).data, job)


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=django_fields)
def test_hostile_django_messages_through_the_worker_arrive_intact(
    django_settings: None, starttls_server: DevServer, celery_worker: Any, fields: dict[str, Any]
) -> None:
    from mailworker.tasks.django import EmailBackend

    marker = f"dj-{uuid.uuid4().hex}@example.com"  # finds this example's message
    message = _django_message({**fields, "bcc": [*fields["bcc"], marker]})
    if message is None:
        return
    try:
        EmailBackend().send_messages([message])
    except InvalidEmail:
        return
    event("sent through the worker")
    received = arrived(starttls_server, marker)[marker]
    check_received(received.data, _expected_job(message))


def test_django_defaults_local_addresses_and_lazy_strings_arrive(
    django_settings: None, starttls_server: DevServer, celery_worker: Any
) -> None:
    """Django's own default SERVER_EMAIL (root@localhost), mail_admins(), and gettext_lazy
    text: queued and delivered, as with Django's SMTP backend."""
    from django.core import mail
    from django.utils.translation import gettext_lazy

    tag = uuid.uuid4().hex[:8]
    sent = mail.send_mail(
        gettext_lazy(f"Lazy subject {tag}"),
        gettext_lazy("Lazy body"),
        "root@localhost",
        [f"ops-{tag}@localhost"],
    )
    assert sent == 1
    mail.mail_admins(f"Broken {tag}", "Traceback ...")
    received = arrived(starttls_server, f"ops-{tag}@localhost", "admin@localhost")
    lazy = received[f"ops-{tag}@localhost"]
    assert lazy.mail_from == "root@localhost"
    assert lazy.message["Subject"] == f"Lazy subject {tag}"
    assert lazy.message.get_content().strip() == "Lazy body"
    admins = [m for m in starttls_server.messages if f"Broken {tag}".encode() in m.data]
    assert len(admins) == 1 and admins[0].rcpt_tos == ("admin@localhost",)
    assert admins[0].mail_from == "root@localhost"


def test_django_header_overrides_are_what_the_message_displays(
    django_settings: None, starttls_server: DevServer, celery_worker: Any
) -> None:
    """headers={"To": ...} is the displayed To (Django documents it), Cc and Reply-To too;
    a Message-ID is kept; the envelope is still to + cc + bcc."""
    from django.core import mail

    tag = uuid.uuid4().hex[:8]
    message = mail.EmailMessage(
        "Überblick",
        "Body",
        "Jörg Müller <app@example.com>",
        [f"real-{tag}@example.com"],
        headers={
            "To": "Zoë <everyone@example.com>",
            "Cc": "José <cc-shown@example.com>",
            "Reply-To": "Desk <desk@example.com>",
            "Message-ID": f"<{tag}@app.example.com>",
        },
    )
    assert message.send() == 1
    received = arrived(starttls_server, f"real-{tag}@example.com")[f"real-{tag}@example.com"]
    parsed = received.message
    assert received.rcpt_tos == (f"real-{tag}@example.com",)
    pairs = {
        name: [(a.display_name, a.addr_spec) for a in parsed[name].addresses]
        for name in ("From", "To", "Cc", "Reply-To")
    }
    assert pairs == {
        "From": [("Jörg Müller", "app@example.com")],
        "To": [("Zoë", "everyone@example.com")],
        "Cc": [("José", "cc-shown@example.com")],
        "Reply-To": [("Desk", "desk@example.com")],
    }
    assert parsed["Message-ID"] == f"<{tag}@app.example.com>"
    assert parsed["Subject"] == "Überblick"


def test_a_header_the_backend_cannot_honour_is_refused_not_dropped(django_settings: None) -> None:
    from django.core import mail

    message = mail.EmailMessage(
        "s", "b", None, ["x@example.com"], headers={"Content-Type": "text/x-evil"}
    )
    with pytest.raises(InvalidEmail, match="Content-Type is set by mailworker"):
        message.send()


def test_an_expiry_header_makes_a_django_message_expire_unsent(
    django_settings: None, server: DevServer, celery_worker: Any
) -> None:
    from django.core import mail

    from mailworker.store.pauses import pause_account
    from tests.helpers import extra_account, wait_for_status

    tag = uuid.uuid4().hex[:8]
    code, later = f"code-{tag}@example.com", f"later-{tag}@example.com"
    with extra_account("djexpiry", server.url()):
        pause_account("djexpiry", 5, "test pause")
        connection = mail.get_connection(account="djexpiry")
        message = mail.EmailMessage(
            "Code", "123456", None, [code], connection=connection,
            headers={"X-Mailworker-Expires-In": "1"},
        )  # fmt: skip
        assert message.send() == 1
        lasting = mail.get_connection(account="djexpiry", expires_in=60)
        assert mail.send_mail("Later", "b", None, [later], connection=lasting) == 1
        jobs = _job_ids_for(code, later)
        assert wait_for_status(jobs[code], "expired", "sent", timeout=30)["state"] == "expired"
        wait_for_status(jobs[later], "sent", timeout=30)
    assert [m.rcpt_tos for m in server.messages] == [(later,)]
    assert b"X-Mailworker-Expires-In" not in server.messages[0].data


def _job_ids_for(*addresses: str) -> dict[str, str]:
    """The job of each address (unique to the test), read from the job records."""
    from mailworker.store.client import get_redis

    client = get_redis()
    found = {}
    for key in client.scan_iter("mailworker:job:*", count=1000):
        payload = client.hget(key, "payload")
        try:
            job = EmailJob.from_payload(json.loads(payload or "null"))
        except UndecodableJob:  # a campaign batch's record, or no payload
            continue
        found.update({a: job.id for a in addresses if a in job.recipients})
    return found


def test_django_mail_is_captured_like_mail_outbox(django_settings: None) -> None:
    """mailworker's equivalent of Django's mail.outbox: validated like a real send."""
    from django.core import mail

    from mailworker.testing import capture_emails

    with capture_emails() as outbox:
        mail.send_mail("Hallo", "Grüße", "Jörg <app@example.com>", ["zoe@example.com"])
        with pytest.raises(InvalidEmail):
            mail.send_mail("x", "y", None, ["not an address"])
    [captured] = outbox
    assert captured.to == ["zoe@example.com"]
    assert captured.message["From"].addresses[0].display_name == "Jörg"
    assert captured.message.get_content().strip() == "Grüße"
