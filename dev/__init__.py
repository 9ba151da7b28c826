"""Development tools: a TLS + AUTH SMTP server, a private Redis, the demo, and the capture
of an app's mail in its tests (:mod:`mailworker.testing`).

The server and the demo need the ``dev`` extra (aiosmtpd, trustme); the capture needs
nothing more than the library. Nothing in the library imports this package except the
command line's ``demo`` and ``devserver`` commands, mailworker.testing and the tests.
"""
