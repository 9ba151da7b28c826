"""One written form per address, wherever an address is a key (the suppression list,
unsubscribe tokens): ``Zoé@Bücher.example``, ``zoé@xn--bcher-kva.example`` and the same
with é written as e + U+0301 are one person.

The form, decided once:

* the domain in ASCII: IDNA 2008 with the UTS #46 mapping (what email-validator gives the
  producer, so the jobs in Redis carry the same form), lower case, no trailing dot;
* the local part in Unicode NFC, **lower case**. RFC 5321 lets a server treat ``Ann`` and
  ``ann`` as two mailboxes; no large provider does, and for a suppression list the safe
  mistake is to leave out one mailbox too many, never to mail someone who unsubscribed.

Text that is not an address (no ``@``, a domain IDNA refuses) is kept in the same spirit
(NFC, lower case) so that it is still one key.
"""

from __future__ import annotations

import unicodedata

import idna


def normalize_address(address: str) -> str:
    local, at, domain = unicodedata.normalize("NFC", address.strip()).rpartition("@")
    if not at:
        return domain.lower()
    return f"{local.lower()}@{_ascii_domain(domain)}"


def _ascii_domain(domain: str) -> str:
    domain = domain.rstrip(".")
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError):
        return domain.lower()
