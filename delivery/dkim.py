"""DKIM-sign a message (RFC 6376) with the key of its From domain, if one is configured.

Relaxed/relaxed canonicalization (it survives the header refolding relays do). Signed: the
headers RFC 6376 5.4.1 recommends that are present, From signed once more than present so
a second From cannot be added, and the list headers bulk mail carries (RFC 8058 requires
``List-Unsubscribe`` and ``List-Unsubscribe-Post`` to be signed for one-click unsubscribe).
"""

from __future__ import annotations

from collections.abc import Mapping

import dkim

from mailworker.delivery.header_check import check_header_block
from mailworker.settings.dkim import DkimKey

_ALSO_SIGN = (b"list-unsubscribe-post",)


def dkim_sign(data: bytes, from_address: str, keys: Mapping[str, DkimKey]) -> bytes:
    """``data`` with a DKIM-Signature on top, or unchanged if its domain has no key."""
    key = keys.get(from_address.rpartition("@")[2].lower().rstrip("."))
    if key is None:
        return data
    signer = dkim.DKIM(data)
    signer.should_sign.update(_ALSO_SIGN)
    signature = signer.sign(
        key.selector.encode(),
        key.domain.encode(),
        key.private_key.get_secret_value(),
        signature_algorithm=key.algorithm.encode(),
        canonicalize=(b"relaxed", b"relaxed"),
    )
    check_header_block(signature, ["DKIM-Signature"])  # dkimpy's folding, held to ours
    return signature + data
