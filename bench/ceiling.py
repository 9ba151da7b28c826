"""The ceiling of this stack: raw aiosmtplib over N persistent connections, no queue at all.

Prints the elapsed seconds for sending COUNT messages.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib

from mailworker.delivery.tls import client_tls_context


async def run(count: int, connections: int) -> float:
    url = urlsplit(os.environ["SMTP_URL"])
    context = client_tls_context(os.environ["SMTP_CA_FILE"])  # type: ignore[arg-type]
    clients = [
        aiosmtplib.SMTP(
            hostname=url.hostname,
            port=url.port,
            start_tls=True,
            tls_context=context,
            local_hostname="bench",
        )
        for _ in range(connections)
    ]
    await asyncio.gather(*(c.connect() for c in clients))
    await asyncio.gather(
        *(c.login(unquote(url.username or ""), unquote(url.password or "")) for c in clients)
    )
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def drain(client: aiosmtplib.SMTP) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            message = EmailMessage()
            message["From"] = "bench@example.com"
            message["To"] = f"reader{i}@example.com"
            message["Subject"] = f"ceiling {i}"
            message.set_content("x")
            await client.send_message(message)

    started = time.perf_counter()
    await asyncio.gather(*(drain(c) for c in clients))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.quit() for c in clients))
    return elapsed


if __name__ == "__main__":
    print(asyncio.run(run(int(sys.argv[1]), int(sys.argv[2]))))
