"""Read one mailbox as apps write it: ``Zoë <zoe@example.com>``, ``"Müller, Jörg"
<j@example.com>``, ``root@localhost``.

email-validator judges the address; two things it refuses that apps rightly send are read
here first:

* an unquoted display name with UTF-8 (RFC 6532 makes it atext) or a period (RFC 5322
  obs-phrase: ``J. Smith``), which Django, ``email.headerregistry`` and mail clients accept.
  It is quoted before email-validator sees it. A name with a comma, semicolon, colon, @ or
  brackets stays refused unquoted: ``Müller, Jörg <j@example.com>`` is two addresses to a
  reader.
* a domain under ``localhost``, ``test``, ``local`` or ``internal`` (RFC 6761/6762 and
  ICANN's private-use name), where the caller allows local domains: a development server,
  Django's ``SERVER_EMAIL = "root@localhost"``. ``invalid``, ``onion`` and ``arpa`` never.
"""

from __future__ import annotations

import re

import idna
from email_validator import EmailNotValidError, validate_email

LOCAL_DOMAINS = ("localhost", "test", "local", "internal")
SWITCH = "ALLOW_LOCAL_DOMAINS"
# "Name <spec>" with the name unquoted: no quote, no angle bracket in it.
_NAME_AND_SPEC = re.compile(r'\s*([^"<>]*?)\s*<([^<>]*)>\s*')
# RFC 5322 specials that change what an unquoted phrase means (the period is allowed).
_AMBIGUOUS = re.compile(r"[(),:;@\[\]\\]")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_STAND_IN = "example.com"  # a domain email-validator takes, while it judges the local part


class AddressError(ValueError):
    """``value`` is not one mailbox; the message says why and what to write instead."""


def parse_mailbox(value: str, *, local_domains: bool = False) -> tuple[str, str]:
    """(display name, address): the address ASCII but for a UTF-8 local part (IDN domains
    in punycode), the name unquoted and unescaped."""
    value = _quote_display_name(value)
    try:
        result = validate_email(
            value, check_deliverability=False, allow_smtputf8=True, allow_display_name=True
        )
    except EmailNotValidError as exc:
        local = _local_domain(value)
        if local is None:
            raise AddressError(f"{value!r} is not a valid address: {exc}") from None
        if not local_domains:
            raise AddressError(
                f"{value!r} is not a valid address: {exc} Set {SWITCH}=true to send to "
                f"localhost and *.test, *.local and *.internal (a development server)"
            ) from None
        return _with_local_domain(value, local)
    return result.display_name or "", f"{result.local_part}@{result.ascii_domain}"


def _quote_display_name(value: str) -> str:
    match = _NAME_AND_SPEC.fullmatch(value)
    if match is None or not match[1]:
        return value  # no name, or a quoted one
    name, spec = match[1], match[2]
    if _AMBIGUOUS.search(name):
        raise AddressError(
            f"{value!r}: the display name {name!r} has a character that splits or ends an "
            f'address when not quoted; quote it: "{name}" <{spec}>'
        )
    return f'"{name}" <{spec}>'


def _local_domain(value: str) -> str | None:
    """The domain of ``value`` if it is a local one (lower-case, ASCII), else ``None``."""
    spec = value.rstrip().removesuffix(">")
    domain = spec.rpartition("@")[2].strip().lower()
    try:
        domain = idna.encode(domain, uts46=True).decode() if not domain.isascii() else domain
    except idna.IDNAError:
        return None
    labels = domain.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels) or len(domain) > 253:
        return None
    return domain if labels[-1] in LOCAL_DOMAINS else None


def _with_local_domain(value: str, domain: str) -> tuple[str, str]:
    """Judge everything but the domain with a stand-in domain, then put it back."""
    head, _, _ = value.rstrip().removesuffix(">").rpartition("@")
    stand_in = f"{head}@{_STAND_IN}" + (">" if value.rstrip().endswith(">") else "")
    try:
        result = validate_email(
            stand_in, check_deliverability=False, allow_smtputf8=True, allow_display_name=True
        )
    except EmailNotValidError as exc:
        raise AddressError(f"{value!r} is not a valid address: {exc}") from None
    return result.display_name or "", f"{result.local_part}@{domain}"
