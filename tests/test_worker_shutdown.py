"""A real worker process says QUIT on every pooled connection when it is told to stop."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from mailworker.dev.devserver import DevServer
from mailworker.tasks import send_email
from tests.conftest import PASSWORD, USER
from tests.helpers import extra_account, wait_all_sent, worker_process


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_sigterm_quits_every_open_connection(
    pool: str, environment: dict[str, str], certificate_dir: Path, ca: trustme.CA, tmp_path: Path
) -> None:
    with DevServer(
        tls="starttls", users={USER: PASSWORD}, ca=ca, certificate_dir=certificate_dir
    ) as server:
        env = {"SMTP_URL_SHUTDOWN": server.url() + "?max_connections=3"}
        queue = f"shutdown-{pool}"
        log = (tmp_path / "worker.log").open("wb")
        with log, worker_process(queue, env, pool=pool, concurrency=3, log_file=log) as worker:
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
            try:
                assert worker.wait(25) == 0
            except subprocess.TimeoutExpired:
                pytest.fail(f"no exit 25 s after SIGTERM:\n{_stacks(worker.pid, tmp_path)}")
        assert server.log.connections >= 1
        assert server.log.commands["QUIT"] == server.log.connections
        assert server.log.open_connections == 0


def _stacks(pid: int, tmp_path: Path) -> str:
    """Where a hung worker and its children are stuck (py-spy), and the worker's log tail."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    dumps = []
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    for process in [str(pid), *children.split()]:
        if spy is not None:
            out = subprocess.run([spy, "dump", "--pid", process], capture_output=True, text=True)
            dumps.append(f"--- {process}\n{out.stdout}{out.stderr}")
    log_tail = (tmp_path / "worker.log").read_text(errors="replace")[-4000:]
    return "\n".join(dumps) + f"\n--- worker log\n{log_tail}"
