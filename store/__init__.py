"""The Redis state: every key mailworker writes, and the records kept under them.

Owns the Redis clients (plain, TLS, Sentinel), the key schema (:mod:`.keys`), and the
records: jobs and their state machine, the sent-ledger, dead letters, pauses, the
suppression list and campaign state. May import :mod:`mailworker.settings` and redis;
never Celery, kombu or aiosmtplib.
"""
