"""The delivery core, without Celery: a job in, a delivery report or a decision out.

Message bytes (headers, MIME, DKIM), SMTP sessions (TLS, AUTH, OAuth, PIPELINING) in pools
with cluster-wide connection slots and rate limits, the one classification of replies and
the plan of what each decision does. May import settings, store and observe; never Celery
or kombu, and nothing above it. aiosmtplib is read here only, and translated in
:mod:`.errors`.
"""
