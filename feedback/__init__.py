"""What comes back after the 250: delivery status notifications, complaints, auto-replies.

A relay accepts almost every message with 250; the real outcome arrives later by mail (a
DSN, RFC 3464; an ARF complaint, RFC 5965) or as a provider's event. This package reads
them (:mod:`.reports`) and says what each one means for which job and recipient, with the
same conservative judgement as the SMTP replies (delivery.classify): only a recipient the
report clearly says does not exist is a hard bounce. May import settings, store, observe and
delivery; never Celery.
"""
