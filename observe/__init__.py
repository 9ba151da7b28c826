"""What mailworker tells its operators: Sentry events, log lines, masked addresses.

Used by every layer above the ground; imports only :mod:`mailworker.settings`.
"""
