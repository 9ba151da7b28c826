"""Development tools: a TLS + AUTH SMTP server, a private Redis and the demo.

Needs the ``dev`` extra (aiosmtpd, trustme). Nothing in the library imports this package
except the command line's ``demo`` and ``devserver`` commands and the tests.
"""
