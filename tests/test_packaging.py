"""The built wheel installs one import name, and works beside an app that has its own
``tasks.py``, ``worker.py`` and ``settings.py`` (the names Celery's tutorial uses)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from mailworker.dev.devserver import DevServer
from mailworker.worker.commands import celery_worker_argv
from tests.helpers import wait_for_status

ROOT = Path(__file__).resolve().parent.parent
WHERE = "import mailworker, tasks; print(mailworker.__file__, tasks.__file__)"
APP_FILES = {
    # An app's own modules with the names mailworker's folders have in the repository.
    "tasks.py": "def add(a, b):\n    return a + b\n",
    "worker.py": "NAME = 'the app worker'\n",
    "settings.py": "DEBUG = True\n",
    "send.py": (
        "import sys\n"
        "from tasks import add\n"  # the app's own tasks.py, not mailworker's
        "from worker import NAME\n"
        "from settings import DEBUG\n"
        "from mailworker import send_email\n"
        "assert add(1, 2) == 3 and NAME == 'the app worker' and DEBUG\n"
        "job = send_email.apply_async(\n"
        "    kwargs={'to': 'beside@example.com', 'subject': 'from the app', 'text': 'hi'},\n"
        "    queue=sys.argv[1],\n"
        ")\n"
        "print(job.id)\n"
    ),
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    [built] = out.glob("mailworker-*.whl")
    return built


def test_the_wheel_holds_mailworker_and_its_dist_info_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"mailworker"}
    assert len(tops) == 2


@pytest.fixture(scope="module")
def app_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel; dependencies come from this environment's
    site-packages as a plain path (its editable mailworker is not on that path)."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    return python


def test_an_app_with_its_own_tasks_worker_and_settings_sends_through_a_real_worker(
    app_venv: Path, tmp_path: Path, starttls_server: DevServer, environment: dict[str, str]
) -> None:
    for name, source in APP_FILES.items():
        (tmp_path / name).write_text(source)
    env = {**os.environ, **environment, "PYTHONPATH": ""}
    where = subprocess.run(
        [
            str(app_venv),
            "-c",
            "import mailworker, tasks; print(mailworker.__file__, tasks.__file__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "site-packages" in where[0] and where[1] == str(tmp_path / "tasks.py")

    queue = "app-beside"
    argv = celery_worker_argv(queue, hostname=f"{queue}@%h")
    argv[0] = str(app_venv)
    worker = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    try:
        sent = subprocess.run(
            [str(app_venv), "send.py", queue],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        job_id = sent.stdout.strip()
        wait_for_status(job_id, "sent", timeout=60)
    finally:
        worker.terminate()
        _, log = worker.communicate(timeout=30)
    arrived = [m for m in starttls_server.messages if job_id.encode() in m.data]
    assert [m.rcpt_tos for m in arrived] == [("beside@example.com",)], log.decode()[-2000:]
