"""The root of every error mailworker raises, so ``except MailworkerError`` catches them all.

    MailworkerError
    ├── SettingsError        (mailworker.settings)    also a ValueError: a setting is wrong
    ├── InvalidEmail         (mailworker.tasks)       also a ValueError: bad send_email input
    │   └── InvalidAddress, InvalidAttachment, HeaderInjection, MessageTooLarge, ...
    ├── QueueUnavailable     (mailworker.tasks)       the broker did not take the job
    ├── CampaignError        (mailworker.tasks)       a campaign cannot start or change
    ├── InvalidToken         (mailworker.tasks)       also a ValueError: a bad unsubscribe link
    ├── UndecodableJob       (mailworker.store)       also a ValueError: not a job we can read
    └── DeliveryError        (mailworker.delivery)    sending failed; ``.code``, ``.reply``
        ├── TransientFailure, PermanentFailure
        └── AccountProblem   AuthenticationRefused, TlsUnavailable, CertificateRejected

Third-party exceptions (aiosmtplib, redis, kombu) are translated at one boundary each
(``mailworker.delivery.errors.translate`` for SMTP) and never escape a public API raw.
"""

from __future__ import annotations


class MailworkerError(Exception):
    """Anything mailworker raises on purpose."""
