"""Amazon SNS messages, verified: a notification is acted on only if AWS signed it.

What is checked, in order (AWS, "Verifying the signatures of Amazon SNS messages"):

* the body is an SNS JSON message of a known ``Type`` with a ``Signature``: raw message
  delivery (no envelope, no signature) is refused, it cannot be verified;
* its ``TopicArn`` is one of the topics configured (``SES_SNS_TOPICS``): a genuine message
  of somebody else's topic is refused too;
* ``SigningCertURL`` is ``https://sns.<region>.amazonaws.com[.cn]/....pem``, fetched over
  verified HTTPS (that is what makes the certificate trustworthy) and cached;
* the signature over the canonical string (the fields below, ``name\\nvalue\\n`` each) is
  RSA PKCS#1 v1.5 with SHA1 (``SignatureVersion`` 1) or SHA256 (2).

A ``SubscriptionConfirmation`` that passes is confirmed by fetching its ``SubscribeURL``
(which must be an SNS host too).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import ssl
import urllib.request
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailworker.errors import MailworkerError

_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),  # fmt: skip
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_BODY = 256 * 1024  # SNS messages are at most 256 KB

# Fetches a URL's body (the certificate, the SubscribeURL): replaced in tests.
Fetch = Callable[[str], bytes]


class Refused(MailworkerError, ValueError):
    """Not a message we act on: unsigned, badly signed, another topic, malformed."""


def verified_message(body: bytes | str, topics: Iterable[str], fetch: Fetch) -> dict[str, Any]:
    """The SNS message in ``body`` once its topic and signature check out."""
    if len(body) > MAX_BODY:
        raise Refused("body larger than an SNS message can be")
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused("not JSON") from None
    if not isinstance(message, dict) or message.get("Type") not in _SIGNED_FIELDS:
        raise Refused("not an SNS message (raw message delivery cannot be verified; turn it off)")
    if not message.get("Signature") or not message.get("SigningCertURL"):
        raise Refused("unsigned SNS message")
    allowed = set(topics)
    if not allowed:
        raise Refused("no topic is configured: set SES_SNS_TOPICS to the topic ARNs")
    if message.get("TopicArn") not in allowed:
        raise Refused("message of a topic that is not configured in SES_SNS_TOPICS")
    certificate = _certificate(_sns_url(message["SigningCertURL"], pem=True), fetch)
    _check_signature(message, certificate)
    return message


def confirm_subscription(message: dict[str, Any], fetch: Fetch) -> None:
    """Visit the SubscribeURL of a verified SubscriptionConfirmation."""
    fetch(_sns_url(str(message.get("SubscribeURL", "")), pem=False))


def https_fetch(url: str) -> bytes:
    """GET over HTTPS with the system CAs, certificate and host name verified."""
    context = ssl.create_default_context()
    with urllib.request.urlopen(url, timeout=10, context=context) as response:  # noqa: S310
        return bytes(response.read(MAX_BODY))


def _sns_url(url: str, *, pem: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not _SNS_HOST.fullmatch(parts.hostname or ""):
        raise Refused("the URL is not an https:// URL of an sns.<region>.amazonaws.com host")
    if pem and not parts.path.endswith(".pem"):
        raise Refused("SigningCertURL is not a .pem file")
    return url


@lru_cache(maxsize=32)
def _cached(url: str, fetch: Fetch) -> x509.Certificate:
    return x509.load_pem_x509_certificate(fetch(url))


def _certificate(url: str, fetch: Fetch) -> x509.Certificate:
    try:
        return _cached(url, fetch)
    except (OSError, ValueError) as exc:
        raise Refused(f"could not fetch the signing certificate: {type(exc).__name__}") from None


def _check_signature(message: dict[str, Any], certificate: x509.Certificate) -> None:
    algorithm = _HASHES.get(str(message.get("SignatureVersion", "")))
    if algorithm is None:
        raise Refused("unknown SignatureVersion")
    canonical = "".join(
        f"{name}\n{message[name]}\n"
        for name in _SIGNED_FIELDS[message["Type"]]
        if name in message and message[name] is not None
    ).encode()
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused("the signing certificate has no RSA key")
    try:
        signature = base64.b64decode(message["Signature"], validate=True)
        key.verify(signature, canonical, padding.PKCS1v15(), algorithm())
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused("bad signature") from None
