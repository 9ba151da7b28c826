"""One-click unsubscribe for bulk mail (RFC 8058), as Gmail and Yahoo require of bulk senders.

Each campaign message carries::

    List-Unsubscribe: <https://app.example/unsubscribe?token=...>, <mailto:unsub@app.example>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click
    List-Id: <campaign-id.app.example>

The token is ``base64url(campaign "\\n" address) "." base64url(HMAC-SHA256)`` keyed with
``UNSUBSCRIBE_SECRET``: it names one recipient of one campaign and cannot be altered. The
app's endpoint (GET shows a page, POST is the one-click) calls :func:`unsubscribe`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import redis

from mailworker.errors import MailworkerError
from mailworker.settings import Settings, SettingsError, get_settings
from mailworker.store import campaigns
from mailworker.store.addresses import normalize_address
from mailworker.store.suppression import suppress

MAX_TOKEN_CHARS = 2048  # a campaign id and an address make a few hundred


class InvalidToken(MailworkerError, ValueError):
    """The token was not issued by us, was altered, or is malformed."""


def make_token(campaign_id: str, address: str, settings: Settings | None = None) -> str:
    body = f"{campaign_id}\n{normalize_address(address)}".encode()
    return f"{_b64(body)}.{_b64(_sign(body, settings or get_settings()))}"


def verify_token(token: str, settings: Settings | None = None) -> tuple[str, str]:
    """``(campaign id, address)`` of a genuine token; :class:`InvalidToken` for anything
    else (``None`` from a missing query parameter, bytes, any text), never another error."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("malformed unsubscribe token")
    try:
        body_part, signature_part = token.split(".")
        body, signature = _unb64(body_part), _unb64(signature_part)
    except ValueError:
        raise InvalidToken("malformed unsubscribe token") from None
    if not hmac.compare_digest(signature, _sign(body, settings or get_settings())):
        raise InvalidToken("unsubscribe token signature does not match")
    try:
        campaign_id, address = body.decode().split("\n")
    except ValueError:  # signed by us, so not expected: still not a token we can use
        raise InvalidToken("malformed unsubscribe token") from None
    return campaign_id, address


def unsubscribe(token: str, *, client: redis.Redis | None = None) -> tuple[str, str]:
    """Verify ``token`` and suppress its address for the campaign's list; return what it
    named. Receipts and password resets still reach the address (docs/feedback.md, "Lists").

    Raises :class:`InvalidToken` for any input that is not a genuine token: an endpoint
    answers it with 400, and only a missing UNSUBSCRIBE_SECRET is a different error."""
    campaign_id, address = verify_token(token)
    suppress(
        address,
        f"campaign {campaign_id}",
        kind="unsubscribe",
        source="link",
        scope=list_scope(campaign_id, client=client),
        client=client,
    )
    return campaign_id, address


def list_scope(campaign_id: str, *, client: redis.Redis | None = None) -> str:
    """``list:<List-Id>`` of a campaign, or ``bulk`` (every campaign) if it is gone."""
    list_id = campaigns.list_of(campaign_id, client=client)
    return f"list:{list_id}" if list_id else "bulk"


def unsubscribe_headers(
    campaign_id: str, address: str, list_id: str, settings: Settings
) -> dict[str, str]:
    """The List-* headers of one campaign message to ``address``."""
    url = settings.unsubscribe.url
    if url is None:
        raise SettingsError(
            "UNSUBSCRIBE_URL", "bulk campaigns need an https endpoint for one-click unsubscribe"
        )
    token = make_token(campaign_id, address, settings)
    separator = "&" if "?" in url else "?"
    targets = [f"<{url}{separator}token={token}>"]
    if settings.unsubscribe.mailto:
        targets.append(f"<mailto:{settings.unsubscribe.mailto}?subject=unsubscribe%20{token}>")
    return {
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": f"<{list_id}>",
    }


def _sign(body: bytes, settings: Settings) -> bytes:
    secret = settings.unsubscribe.secret
    if secret is None:
        raise SettingsError(
            "UNSUBSCRIBE_SECRET", "set a long random secret to sign unsubscribe links"
        )
    return hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None
