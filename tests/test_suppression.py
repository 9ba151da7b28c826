"""The suppression list holds one form of each address: the same person is found however
the address was written (upper case, a Unicode or punycode domain, composed or not)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailworker.dev.devserver import DevServer
from mailworker.store.addresses import normalize_address
from mailworker.store.suppression import entries, suppressed
from mailworker.tasks import send_email
from mailworker.tasks.unsubscribe import make_token, unsubscribe
from tests.helpers import messages_of, wait_for_status
from tests.test_cli import mailworker

UNICODE = "zoé@bücher.example"
PUNYCODE = "zoé@xn--bcher-kva.example"


@pytest.mark.parametrize(
    "written",
    [
        UNICODE,
        PUNYCODE,
        "ZOÉ@BÜCHER.EXAMPLE",
        "Zoé@XN--BCHER-KVA.example.",
        " zoe\u0301@bu\u0308cher.example ",  # decomposed: e + combining acute, u + diaeresis
    ],
)
def test_every_way_of_writing_an_address_is_one_key(written: str) -> None:
    assert normalize_address(written) == PUNYCODE


@given(st.emails() | st.text(max_size=30))
def test_normalising_twice_changes_nothing(address: str) -> None:
    once = normalize_address(address)
    assert normalize_address(once) == once


@pytest.mark.usefixtures("celery_worker")
@pytest.mark.parametrize(("suppressed_as", "sent_to"), [(UNICODE, PUNYCODE), (PUNYCODE, UNICODE)])
def test_an_address_suppressed_in_one_form_gets_nothing_in_the_other(
    suppressed_as: str, sent_to: str, starttls_server: DevServer, environment: dict[str, str]
) -> None:
    added = mailworker("suppress", "add", suppressed_as.upper(), env=environment)
    assert added.returncode == 0, added.stderr
    checked = mailworker("suppress", "check", sent_to, env=environment)
    assert checked.returncode == 1 and "suppressed" in checked.stdout
    assert suppressed((sent_to,)) == {sent_to}

    job = send_email.delay(to=sent_to, subject="news", text="x")
    record = wait_for_status(job.id, "failed")
    assert record["recipients"] == {PUNYCODE: "bounced suppressed"}
    assert messages_of(starttls_server, job.id) == []

    removed = mailworker("suppress", "remove", sent_to, env=environment)
    assert "removed 1" in removed.stdout
    assert suppressed((suppressed_as,)) == set()


def test_import_and_unsubscribe_tokens_use_the_same_form(
    environment: dict[str, str], tmp_path: pytest.TempPathFactory
) -> None:
    listing = tmp_path / "list.csv"  # type: ignore[operator]
    listing.write_text(f"email\n{UNICODE.upper()}\n")
    assert "suppressed 1" in mailworker("suppress", "import", str(listing), env={}).stdout
    assert suppressed((PUNYCODE,)) == {PUNYCODE}
    assert mailworker("suppress", "remove", PUNYCODE, env={}).returncode == 0

    token = make_token("spring", UNICODE)
    assert make_token("spring", PUNYCODE) == token  # one person, one token
    assert unsubscribe(token) == ("spring", PUNYCODE)
    assert entries((UNICODE,), "bulk")[0] is not None


def test_entries_keep_type_source_scope_and_expiry_and_expired_ones_block_nothing(
    environment: dict[str, str], redis: Any
) -> None:
    import time

    from mailworker.store.suppression import campaign_blocked, prune_expired, scope_key
    from mailworker.store.suppression import suppress as add

    add("old@example.com", "3 soft bounces", kind="soft-bounce", source="dsn", status="5.2.2",
        scope="bulk", expires_at=time.time() - 1)  # fmt: skip
    add("new@example.com", "complaint", kind="complaint", source="arf", scope="bulk")
    add("list@example.com", "link", kind="unsubscribe", source="link", scope="list:news.example")
    assert entries(["old@example.com"], "bulk") == [None]  # expired: blocks nothing
    (entry,) = entries(["new@example.com"], "bulk")
    assert entry is not None and (entry.type, entry.source, entry.scope) == (
        "complaint",
        "arf",
        "bulk",
    )
    assert "complaint (arf, bulk)" in entry.describe()
    assert suppressed(("new@example.com", "list@example.com")) == set()  # transactional mail goes

    pipe = redis.pipeline()
    wanted = ["old@example.com", "new@example.com", "list@example.com", "free@example.com"]
    for scope in ("all", "bulk", "list:news.example"):
        pipe.hmget(scope_key(scope), wanted)
    found = campaign_blocked([[v.decode() if v else None for v in r] for r in pipe.execute()])
    assert [bool(f) for f in found] == [False, True, True, False]

    assert prune_expired("bulk") == 1 and redis.hexists(scope_key("bulk"), "new@example.com")
    with pytest.raises(ValueError, match="do not expire"):
        add("x@example.com", kind="manual", expires_at=time.time() + 60)
    with pytest.raises(ValueError, match="scope"):
        scope_key("everywhere")
