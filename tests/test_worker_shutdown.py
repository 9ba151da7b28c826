"""A real worker process says QUIT on every pooled connection when it is told to stop."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trustme

from tasks import send_email
from tests.conftest import PASSWORD, USER
from tests.helpers import extra_account, wait_all_sent, worker_process
from worker.devserver import DevServer


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_sigterm_quits_every_open_connection(
    pool: str, environment: dict[str, str], certificate_dir: Path, ca: trustme.CA
) -> None:
    with DevServer(
        tls="starttls", users={USER: PASSWORD}, ca=ca, certificate_dir=certificate_dir
    ) as server:
        env = {"SMTP_URL_SHUTDOWN": server.url() + "?max_connections=3"}
        queue = f"shutdown-{pool}"
        with worker_process(queue, env, pool=pool, concurrency=3) as worker:
            with extra_account("shutdown", env["SMTP_URL_SHUTDOWN"]):
                job_ids = [
                    send_email.apply_async(
                        kwargs={
                            "to": f"r{i}@example.com",
                            "subject": "s",
                            "text": "t",
                            "account": "shutdown",
                        },
                        queue=queue,
                    ).id
                    for i in range(12)
                ]
                wait_all_sent(job_ids)
            assert server.log.open_connections >= 1
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(25) == 0
        assert server.log.connections >= 1
        assert server.log.commands["QUIT"] == server.log.connections
        assert server.log.open_connections == 0
