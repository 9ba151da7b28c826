"""Find a Redis to use for the demo and the tests, or start a private one.

A private ``redis-server`` listens on a free loopback port, keeps nothing on disk and is
stopped with the process that started it. If no binary exists, :class:`RedisUnavailable`
says in one line how to install it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from urllib.parse import quote

import redis

from mailworker.dev.devserver import free_port
from mailworker.errors import MailworkerError

INSTALL_HINT = (
    "no Redis answers and no redis-server binary was found: install it with "
    "'sudo apt-get install redis-server' (Debian/Ubuntu) or 'brew install redis' (macOS)"
)


class RedisUnavailable(MailworkerError, RuntimeError):
    pass


@dataclass
class PrivateRedis:
    url: str
    process: subprocess.Popen[bytes]
    directory: tempfile.TemporaryDirectory[str]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.directory.cleanup()


def answers(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        with client:
            return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS-only private Redis (tests of ``rediss://``)."""

    cert: str
    key: str
    ca: str


# What mailworker's Redis user needs and no more (docs/security.md, "Locking down Redis"):
# its own keys, the Celery remote-control channel it subscribes to and the event channels
# it publishes on
# (``/0`` is the database number of REDIS_URL), data and script commands, nothing
# @dangerous (no FLUSHALL, CONFIG, KEYS, DEBUG, ACL, MONITOR), plus TIME for the Lua clocks.
MAILWORKER_ACL_RULES = (
    "~mailworker:* resetchannels &mailworker:celery:/0.celery.pidbox &/0.* "
    "-@all +@read +@write +@scripting +@transaction +@pubsub +@connection +time -@dangerous"
)


@dataclass(frozen=True)
class AclUser:
    """The only user of an ACL-locked private Redis (the ``default`` user is switched off).

    ``rules`` are Redis ACL rules, such as :data:`MAILWORKER_ACL_RULES`.
    """

    name: str
    password: str
    rules: str


def start_private_redis(tls: TlsFiles | None = None, user: AclUser | None = None) -> PrivateRedis:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable(INSTALL_HINT)
    port = free_port()
    directory = tempfile.TemporaryDirectory(prefix="mailworker-redis-")
    listen = ["--port", str(port)]
    credentials = ""
    if user is not None:
        # One config line each: "user default off" and "user <name> on ><password> <rules>".
        listen += ["--user", "default", "off"]
        listen += ["--user", user.name, "on", f">{user.password}", *user.rules.split()]
        credentials = f"{quote(user.name, safe='')}:{quote(user.password, safe='')}@"
    url = f"redis://{credentials}127.0.0.1:{port}/0"
    if tls is not None:
        listen = ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
        listen += ["--tls-cert-file", tls.cert, "--tls-key-file", tls.key]
        listen += ["--tls-ca-cert-file", tls.ca]
        url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={tls.ca}"
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            *listen,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory.name,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not answers(url, 0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            directory.cleanup()
            raise RedisUnavailable(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    return PrivateRedis(url=url, process=process, directory=directory)
