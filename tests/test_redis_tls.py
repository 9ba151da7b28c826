"""rediss://: broker, job records, rate limiter and connection slots over a TLS-only Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from mailworker.dev.devredis import TlsFiles, start_private_redis
from mailworker.dev.devserver import DevServer
from tests.helpers import produce_elsewhere, states_when_sent, worker_process


@pytest.fixture(scope="module")
def tls_redis_url(ca: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("redis-tls")
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(*(str(directory / name) for name in ("cert.pem", "key.pem", "ca.pem")))
    issued.cert_chain_pems[0].write_to_path(files.cert)
    issued.private_key_pem.write_to_path(files.key)
    ca.cert_pem.write_to_path(files.ca)
    server = start_private_redis(files)
    yield server.url
    server.stop()


@pytest.mark.slow
def test_a_limited_capped_account_works_over_rediss(
    tls_redis_url: str, server: DevServer, environment: dict[str, str]
) -> None:
    assert tls_redis_url.startswith("rediss://")
    smtp_url = server.url() + "?rate=40/s&cluster_connections=1"
    env = {"REDIS_URL": tls_redis_url, "SMTP_URL_SECURE": smtp_url}
    job_ids = produce_elsewhere(env, "secure", "tls-test", 30)
    client = redis_lib.Redis.from_url(tls_redis_url, decode_responses=True)
    with worker_process("tls-test", env):
        states = states_when_sent(client, job_ids)
        limits = subprocess.run(
            [sys.executable, "-m", "mailworker.cli", "limits", "secure", "--json"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert states == ["sent"] * 30
    assert len(server.messages) == 30 and server.log.max_concurrent == 1
    (report,) = json.loads(limits.stdout)
    assert report["windows"][0]["label"] == "40/s"
    assert report["connections"]["cap"] == 1
    assert client.keys("mailworker:{account:secure}:*")  # the limiter lives in the TLS Redis
    client.close()


def test_the_test_redis_really_refuses_plaintext(tls_redis_url: str) -> None:
    port = tls_redis_url.split(":")[2].split("/")[0]
    plain = redis_lib.Redis(host="127.0.0.1", port=int(port), socket_timeout=1)
    with pytest.raises(redis_lib.RedisError):
        plain.ping()
    plain.close()
    assert Path(tls_redis_url.split("ssl_ca_certs=")[1]).is_file()
