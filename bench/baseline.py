"""The common recipe, as the baseline: a Celery task that opens, authenticates and closes an
``smtplib`` connection per message. Same broker settings and worker concurrency as mailworker.

Run as ``celery -A bench.baseline worker -Q bench-baseline``.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from email.message import EmailMessage
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from celery import Celery

app = Celery("bench-baseline", broker=os.environ.get("REDIS_URL"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue="bench-baseline",
)


@lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    # Built once per process with the system CA bundle, as production would.
    context = ssl.create_default_context()
    context.load_verify_locations(os.environ["SMTP_CA_FILE"])
    return context


@app.task(name="bench.baseline_send")
def baseline_send(to: str, subject: str, text: str) -> None:
    url = urlsplit(os.environ["SMTP_URL"])
    message = EmailMessage()
    message["From"] = "bench@example.com"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    with smtplib.SMTP(url.hostname, url.port, timeout=30) as smtp:
        smtp.starttls(context=tls_context())
        smtp.login(unquote(url.username or ""), unquote(url.password or ""))
        smtp.send_message(message)
