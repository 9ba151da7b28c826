"""What real SMTP replies say, as data: the codes and texts :mod:`worker.classify` reads.

Each table is named by what its entries mean. A phrase is matched case-insensitively as a
substring of the reply text; an enhanced code (RFC 3463) exactly. The reply corpus in
``tests/corpus/smtp_replies.csv`` shows where each came from.
"""

from __future__ import annotations

# Reply codes and enhanced codes that refuse the account itself: credentials, the sender
# identity, the client IP, a sending quota. Every message would fail the same way.
ACCOUNT_CODES = frozenset({530, 534, 535, 538})
CREDENTIAL_ENHANCED = frozenset({"5.7.8", "5.7.3", "5.7.30", "5.7.57", "5.7.139"})
ACCOUNT_ENHANCED = CREDENTIAL_ENHANCED | {
    "5.7.25",  # Gmail: the sending IP has no PTR record
    "5.7.60",  # Microsoft: SendAsDenied
    "5.7.708",  # Microsoft: traffic not accepted from this IP
    "5.7.750",  # Microsoft: client blocked from sending from unregistered domains
    "5.7.511",  # Microsoft: banned sender
    "5.1.7",  # bad sender mailbox syntax
    "5.1.8",  # bad sender's system address
    "5.4.5",  # Gmail: daily sending limit exceeded
    "4.7.66",  # Microsoft: TLS 1.0/1.1 refused
}
# A refusal by the recipient's own rules (a group that takes only internal senders, a
# customer block list): this message to this recipient, whatever words come with it.
RECIPIENT_POLICY_ENHANCED = frozenset({"5.7.133", "5.7.134", "5.7.135", "5.7.136", "5.7.513"})
SENDER_TEXTS = (
    "sender address rejected",
    "not owned by user",
    "sendasdenied",
    "send as this sender",
    "send as denied",
    "not allowed to send as",
    "verified sender identity",
    "helo command rejected",
)
RELAY_TEXTS = (
    "relay access denied",
    "relaying denied",
    "relay denied",
    "unable to relay",
    "relay not permitted",
    "not permitted to relay",
    "relaying not allowed",
    "relay not allowed",
    "we do not relay",
    "allowed rcpthosts",
    "invalid credentials for relay",
)
BLOCKED_CLIENT_TEXTS = (
    "client host rejected",
    "blocked using",
    "banned sending ip",
    "on our block list",
    "spamhaus",
    "dnsbl",
    "ip address has been blocked",
)
ACCOUNT_STATE_TEXTS = (
    "email address is not verified",
    "identities failed the check",
    "sending paused",
    "account is suspended",
    "account has been suspended",
    "authentication required",
    "not authenticated",
    "outboundspamexception",
    "sandbox subdomain",
    "tls required",
    "only on tls",
)
# Sending quotas (a mailbox's quota is "mailbox full", about the recipient).
SENDING_QUOTA_TEXTS = (
    "daily quota exceeded",
    "daily sending quota",
    "daily user sending quota",
    "daily user sending limit",
    "daily message quota",
    "sending quota exceeded",
    "sending limit exceeded",
    "submission quota exceeded",
    "daily smtp relay limit",
    "credits exceeded",
)
ACCOUNT_TEXTS = (
    *SENDER_TEXTS,
    *RELAY_TEXTS,
    *BLOCKED_CLIENT_TEXTS,
    *ACCOUNT_STATE_TEXTS,
    *SENDING_QUOTA_TEXTS,
)
# A 4xx that names these still pauses: waiting a minute will not fix them. A 4xx about the
# sender's domain or this client's hostname is a lookup that may well work next time.
TEMPORARY_ACCOUNT_TEXTS = (*RELAY_TEXTS, *ACCOUNT_STATE_TEXTS, *SENDING_QUOTA_TEXTS)
MAILBOX_FULL_ENHANCED = frozenset({"5.2.2", "4.2.2"})
MAILBOX_FULL_TEXTS = (
    "mailbox full",
    "mailbox is full",
    "mailbox for user is full",
    "over quota",
    "overquota",
    "quota exceeded",
    "exceeded storage",
    "mailbox size limit exceeded",
    "out of storage",
)
TOO_MANY_ENHANCED = frozenset({"5.5.3", "4.5.3"})
TOO_MANY_TEXTS = ("too many recipients", "rcpt limit exceeded")
# Recipient-level permanent codes: the only ones that may suppress an address. 5.2.1 is
# also "receiving too fast" or "cannot be accessed": it suppresses only when it says gone.
UNKNOWN_ENHANCED = frozenset({"5.1.1", "5.1.2", "5.1.10"})
DISABLED_TEXTS = ("disabled", "inactive", "deactivated", "no longer", "does not exist")
# Codes too generic to say why; a known text then decides.
VAGUE_ENHANCED = frozenset({None, "5.0.0", "5.1.0"})
UNKNOWN_TEXTS = (
    "user unknown",
    "unknown user",
    "no such user",
    "no such mailbox",
    "no such recipient",
    "no mailbox here",
    "mailbox not found",
    "mailbox does not exist",
    "recipient not found",
    "recipientnotfound",
    "recipnotfound",
    "does not exist",
    "doesn't exist",
    "doesn't have a",
    "account has been disabled",
    "account is disabled",
    "address unknown",
    "invalid recipient",
    "not a valid mailbox",
)
# "Slow down": Gmail 421 4.7.0 "try again later" / 4.7.28, Microsoft 432 and 4.7.500-699,
# SES throttling, Yahoo [TSS04] deferred for volume.
THROTTLE_ENHANCED = frozenset({"4.7.28"})
THROTTLE_TEXTS = (
    "throttl",
    "rate limit",
    "ratelimit",
    "too many messages",
    "too many connections",
    "too many concurrent",
    "too many open",
    "too many login",
    "too frequent",
    "too much mail",
    "concurrent connections",
    "connection limit",
    "limit exceeded",
    "slow down",
    "unusual rate",
    "unexpected volume",
    "excessive volume",
    "sending rate",
)
GREYLIST_TEXTS = ("greylist", "graylist", "grey-list", "gray-list")
