"""What comes back after the 250: delivery status notifications, complaints, auto-replies.

A relay accepts almost every message with 250; the real outcome arrives later by mail (a
DSN, RFC 3464; an ARF complaint, RFC 5965) or as a provider's event. This package reads
them with the same conservative judgement as the SMTP replies (delivery.classify: only a
recipient the report clearly says does not exist is a hard bounce) and applies them:

    reports    one returned message -> a Report (kind, original Message-ID, recipients)
    apply      a Report -> suppression, the recipient's status, counters, an event
    mailbox    the bounce mailbox reader (IMAP over TLS; `mailworker bounces watch`)
    sns        Amazon SNS signature and topic checks
    ses        Amazon SES notifications -> Reports
    webhooks   the framework-agnostic handler a Django or Flask view calls

May import settings, store, observe and delivery; never Celery.
"""
