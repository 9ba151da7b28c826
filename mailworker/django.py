"""``EMAIL_BACKEND = "mailworker.django.EmailBackend"``: Django's mail through mailworker.

The backend lives with the producer API (:mod:`mailworker.tasks.django`); this is its
public address.
"""

from __future__ import annotations

from mailworker.tasks.django import EmailBackend

__all__ = ["EmailBackend"]
