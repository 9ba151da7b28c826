"""DKIM: messages leave signed with the From domain's key and verify against its DNS record.

The receiving side is dkimpy's verifier with the test's own DNS answer (no network): what a
receiving mailbox provider does with the published ``selector._domainkey`` TXT record.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailworker.dev.devserver import DevServer
from mailworker.settings import SettingsError, load_settings, reload_settings
from mailworker.settings.dkim import parse_dkim
from mailworker.tasks import send_email
from tests.helpers import messages_of, wait_all_sent

KeyPair = tuple[str, str]  # (private PEM, DNS TXT record)


def rsa_pair(bits: int = 2048) -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    public = key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    return _pem(key), f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def ed25519_pair() -> KeyPair:
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    return _pem(key), f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()).decode()


def dns_answer(records: dict[str, str]) -> Callable[..., bytes | None]:
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        record = records.get(name.decode())
        return record.encode() if record is not None else None

    return lookup


@contextmanager
def environment_vars(**values: str) -> Iterator[None]:
    """Set variables for the producer and the in-process worker, then restore them."""
    os.environ.update(values)
    reload_settings()
    try:
        yield
    finally:
        for name in values:
            del os.environ[name]
        reload_settings()


@pytest.mark.usefixtures("celery_worker")
@pytest.mark.parametrize("make_pair", [rsa_pair, ed25519_pair], ids=["rsa-2048", "ed25519"])
def test_sent_mail_is_signed_and_verifies_against_the_published_key(
    make_pair: Callable[[], KeyPair], starttls_server: DevServer, tmp_path: Path
) -> None:
    pem, record = make_pair()
    key_file = tmp_path / "dkim.pem"
    key_file.write_text(pem)
    with environment_vars(DKIM_SHOP=f"d=shop.example; s=mail2026; key={key_file}"):
        signed = send_email.delay(
            to="Reader <reader@example.com>",
            from_email="Shop <news@shop.example>",
            subject="Grüße, your order",
            text="Hello,\n.a line that starts with a dot\n",
            html="<p>Hello</p>",
            headers={"List-Unsubscribe": "<https://shop.example/u?t=" + "x" * 120 + ">"},
        )
        unsigned = send_email.delay(to="reader@example.com", subject="s", text="t")  # app@...
        wait_all_sent([signed.id, unsigned.id])
    [message] = messages_of(starttls_server, signed.id)
    lookup = dns_answer({"mail2026._domainkey.shop.example.": record})
    assert dkim.verify(message.data, dnsfunc=lookup)
    signature = message.message["DKIM-Signature"]
    assert "d=shop.example" in signature and "s=mail2026" in signature
    for header in ("from", "to", "subject", "date", "message-id", "list-unsubscribe"):
        assert header in signature.split("h=")[1].split(";")[0]
    tampered = message.data.replace(b"Hello,", b"Hullo,")
    assert not dkim.verify(tampered, dnsfunc=lookup)
    [plain] = messages_of(starttls_server, unsigned.id)
    assert plain.message["DKIM-Signature"] is None  # no key for example.com


def test_a_key_can_be_given_inline_and_never_shows_in_repr() -> None:
    pem, record = rsa_pair()
    one_line = pem.replace("\n", "\\n")  # how a single-line config var carries it
    key = parse_dkim("DKIM", f"d=Example.COM; s=s1; key={one_line}")
    assert (key.domain, key.selector, key.algorithm) == ("example.com", "s1", "rsa-sha256")
    assert (key.dns_name, key.dns_record) == ("s1._domainkey.example.com", record)  # doctor
    assert "PRIVATE" not in repr(key) and "PRIVATE" not in repr(
        load_settings({"SMTP_URL": "smtps://u:p@h", "DKIM": f"d=example.com; s=s1; key={one_line}"})
    )


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("d=example.com; s=s1", "missing ['key']"),
        ("d=example.com; s=s1; key=/no/such/key.pem", "key= is not a readable file"),
        ("d=example.com; s=bad selector; key=/x", "not a DNS label"),
        ("d=example.com; s=s1; key=-----BEGIN PRIVATE KEY-----\nnope\n", "not an unencrypted PEM"),
        ("example.com", "not name=value"),
    ],
)
def test_a_bad_dkim_setting_names_the_variable(value: str, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"SMTP_URL": "smtps://u:p@h", "DKIM_NEWS": value})
    assert caught.value.variable == "DKIM_NEWS"
    assert words in str(caught.value)


def test_a_short_rsa_key_is_refused() -> None:
    pem, _ = rsa_pair(bits=1024)
    with pytest.raises(SettingsError, match="generate one of 2048"):
        parse_dkim("DKIM", f"d=example.com; s=s1; key={pem}")
