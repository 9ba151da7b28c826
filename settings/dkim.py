"""DKIM signing keys from the environment: one per From domain, RSA or Ed25519.

For accounts that relay through a server that does not sign (a plain relay, some SMTP
services): ``DKIM`` and ``DKIM_<NAME>`` hold a tag list in the style of the DNS record::

    DKIM='d=example.com; s=mail2026; key=/run/secrets/dkim-example.pem'
    DKIM_SHOP='d=shop.example; s=ed2026; key=-----BEGIN PRIVATE KEY-----...'

``key`` is a path to a PEM private key, or the PEM itself (a multi-line config var works
on Heroku). RSA keys need at least 2048 bits (RFC 8301 says SHOULD); Ed25519 signs with
``ed25519-sha256`` (RFC 8463; publish an RSA key too, not every receiver checks Ed25519).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import SecretBytes

from mailworker.settings.errors import SettingsError

_VARIABLE = re.compile(r"^DKIM(_[A-Z0-9_]+)?$")
_MIN_RSA_BITS = 2048  # RFC 8301 allows 1024; receivers increasingly distrust it


@dataclass(frozen=True)
class DkimKey:
    """A signing key for one domain. Its ``repr`` never shows the key."""

    domain: str
    selector: str
    algorithm: Literal["rsa-sha256", "ed25519-sha256"]
    # What dkimpy takes: PKCS#1 PEM for RSA, the base64 raw seed for Ed25519.
    private_key: SecretBytes = field(repr=False)
    public_key_b64: str = ""  # the p= of the DNS record

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dns_record(self) -> str:
        """The TXT record receivers need at :attr:`dns_name`."""
        kind = "rsa" if self.algorithm == "rsa-sha256" else "ed25519"
        return f"v=DKIM1; k={kind}; p={self.public_key_b64}"


def dkim_keys(environ: Mapping[str, str]) -> dict[str, DkimKey]:
    """Every ``DKIM``/``DKIM_<NAME>`` variable, keyed by the (lower-case) domain."""
    keys: dict[str, DkimKey] = {}
    for variable in sorted(environ):
        if not _VARIABLE.match(variable):
            continue
        key = parse_dkim(variable, environ[variable])
        if key.domain in keys:
            raise SettingsError(variable, f"a second DKIM key for {key.domain}")
        keys[key.domain] = key
    return keys


def parse_dkim(variable: str, value: str) -> DkimKey:
    tags = _tags(variable, value)
    missing = {"d", "s", "key"} - set(tags)
    if missing:
        raise SettingsError(
            variable, f"missing {sorted(missing)}; expected 'd=example.com; s=selector; key=PATH'"
        )
    domain, selector = tags["d"].lower().rstrip("."), tags["s"]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", selector):
        raise SettingsError(variable, f"s={selector!r} is not a DNS label")
    algorithm, private_key, public_key = _load_key(variable, tags["key"])
    return DkimKey(domain, selector, algorithm, SecretBytes(private_key), public_key)


def _tags(variable: str, value: str) -> dict[str, str]:
    if value.lstrip().startswith("-----BEGIN"):
        raise SettingsError(variable, "expected 'd=...; s=...; key=...', got a bare PEM key")
    head, sep, pem = value.partition("key=-----BEGIN")  # a PEM may hold '=' and newlines
    tags: dict[str, str] = {}
    for number, part in enumerate(head.split(";"), start=1):
        name, eq, tag_value = part.strip().partition("=")
        if not name:
            continue
        if not eq:  # not repeated: it may be a piece of a key
            raise SettingsError(
                variable,
                f"tag {number} is not name=value; expected 'd=example.com; s=selector; key=PATH'",
            )
        tags[name.strip().lower()] = tag_value.strip()
    if sep:
        tags["key"] = "-----BEGIN" + pem
    return tags


# What is wrong with key=, said without any part of it: it may be the private key itself.
_NOT_PEM = (
    "key= is not an unencrypted PEM private key: give the PEM with its -----BEGIN and "
    "-----END lines, line breaks as newlines or \\n, and no passphrase (openssl pkey -in "
    "KEY -out KEY.pem)"
)
_BARE_BASE64 = re.compile(r"[A-Za-z0-9+][A-Za-z0-9+/=\s]{63,}")


def _pem(variable: str, source: str) -> bytes:
    """The PEM bytes that ``key=`` gives, inline or as a path."""
    if source[:1] in ("'", '"'):
        raise SettingsError(variable, "key= is in quotes: remove them, the PEM goes unquoted")
    if source.startswith("-----BEGIN"):
        return source.replace("\\n", "\n").encode()  # one-line env vars often escape newlines
    if _BARE_BASE64.fullmatch(source):
        raise SettingsError(
            variable,
            "key= looks like a bare base64 key: give the whole PEM, with its "
            "-----BEGIN PRIVATE KEY----- and -----END PRIVATE KEY----- lines, or a file path",
        )
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise SettingsError(
            variable,
            f"key= is not a readable file ({exc.strerror}): give the path of a PEM private "
            "key file, or the PEM itself starting with -----BEGIN",
        ) from None


def _load_key(
    variable: str, source: str
) -> tuple[Literal["rsa-sha256", "ed25519-sha256"], bytes, str]:
    # Imported here: a producer without DKIM variables never loads cryptography.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    pem = _pem(variable, source.strip())
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise SettingsError(variable, _NOT_PEM) from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < _MIN_RSA_BITS:
            raise SettingsError(
                variable, f"an RSA key of {key.key_size} bits is too weak; generate one of 2048"
            )
        pkcs1 = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "rsa-sha256", pkcs1, base64.b64encode(public).decode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return "ed25519-sha256", base64.b64encode(seed), base64.b64encode(public).decode()
    raise SettingsError(variable, f"unsupported key type {type(key).__name__}; use RSA or Ed25519")
