"""A minimal Django project's settings, as an app would write them, for the backend test."""

SECRET_KEY = "test-only-not-secret"
INSTALLED_APPS: list[str] = []
USE_TZ = True
EMAIL_BACKEND = "mailworker.django.EmailBackend"
MAILWORKER_ACCOUNT = "default"
DEFAULT_FROM_EMAIL = "Shop <shop@example.com>"
ADMINS = [("Site Admin", "admin@localhost")]
# SERVER_EMAIL is left at Django's default, "root@localhost": mail_admins() sends from it.
