"""The job: the JSON document that travels through Redis from producer to worker.

It holds everything needed to build the message and nothing secret: the SMTP account is
named, never described. ``v`` versions the schema so an old or foreign payload is refused
with a reason instead of half-understood.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mailworker.errors import MailworkerError

JOB_VERSION = 1

# (display name, address): the address is ASCII (IDN domains in punycode) unless the
# local part itself is non-ASCII, which needs SMTPUTF8 at send time.
Mailbox = tuple[str, str]


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_b64: str
    mimetype: str


@dataclass(frozen=True)
class EmailJob:
    id: str
    account: str
    from_email: Mailbox
    to: tuple[Mailbox, ...]
    subject: str
    text: str | None = None
    html: str | None = None
    cc: tuple[Mailbox, ...] = ()
    bcc: tuple[Mailbox, ...] = ()
    reply_to: tuple[Mailbox, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = ()
    idempotency_key: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    created_at: float = 0.0
    attempt: int = 1
    # Recipients that already got a 250: a retry must never send to them again.
    done: tuple[str, ...] = ()
    # Transactional mail that must reach even a suppressed address (a password reset).
    ignore_suppression: bool = False
    # The caller's own Message-ID (validated), kept across attempts like the derived one.
    message_id: str | None = None
    # Displayed From / To / Cc / Reply-To where the caller set them apart from the envelope.
    shown: tuple[tuple[str, tuple[Mailbox, ...]], ...] = ()
    # Not accepted by a server by then (Unix time): never sent, the job ends `expired`.
    expires_at: float | None = None

    @property
    def recipients(self) -> tuple[str, ...]:
        """Envelope recipients (To, Cc and Bcc), each once, in order."""
        seen: dict[str, None] = {}
        for _, address in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(address, None)
        return tuple(seen)

    def to_payload(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["v"] = JOB_VERSION
        payload["headers"] = dict(self.headers)
        payload["tags"] = dict(self.tags)
        payload["shown"] = {name: list(boxes) for name, boxes in self.shown}
        return payload

    @classmethod
    def from_payload(cls, payload: Any) -> EmailJob:
        """Decode a payload; raise :class:`UndecodableJob` with a reason if it is not ours."""
        if not isinstance(payload, dict):
            raise UndecodableJob(f"payload is a {type(payload).__name__}, not a JSON object")
        version = payload.get("v")
        if version != JOB_VERSION:
            raise UndecodableJob(f"payload version {version!r}, this worker reads {JOB_VERSION}")
        try:
            return cls(
                id=payload["id"],
                account=payload["account"],
                from_email=_mailbox(payload["from_email"]),
                to=tuple(_mailbox(m) for m in payload["to"]),
                subject=payload["subject"],
                text=payload.get("text"),
                html=payload.get("html"),
                cc=tuple(_mailbox(m) for m in payload.get("cc", ())),
                bcc=tuple(_mailbox(m) for m in payload.get("bcc", ())),
                reply_to=tuple(_mailbox(m) for m in payload.get("reply_to", ())),
                headers=tuple(payload.get("headers", {}).items()),
                attachments=tuple(Attachment(**a) for a in payload.get("attachments", ())),
                idempotency_key=payload.get("idempotency_key"),
                tags=tuple(payload.get("tags", {}).items()),
                created_at=float(payload.get("created_at", 0.0)),
                attempt=int(payload.get("attempt", 1)),
                done=tuple(payload.get("done", ())),
                ignore_suppression=payload.get("ignore_suppression", False) is True,
                message_id=payload.get("message_id"),
                expires_at=_optional_time(payload.get("expires_at")),
                shown=tuple(
                    (str(name), tuple(_mailbox(m) for m in boxes))
                    for name, boxes in payload.get("shown", {}).items()
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UndecodableJob(f"malformed payload: {exc!r}") from None


class UndecodableJob(MailworkerError, ValueError):
    """A message in the queue is not a job this worker can read."""


def _optional_time(value: Any) -> float | None:
    return None if value is None else float(value)


def _mailbox(value: Any) -> Mailbox:
    name, address = value
    return (str(name), str(address))
