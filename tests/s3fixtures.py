"""An S3 server on loopback for the object-storage tests: moto's server mode (real HTTP, the real
S3 protocol, conditional puts included), started once per test session on a free port and stopped
at its end.  Each test gets a fresh prefix of one bucket.

The fixtures are made available to every test module by one import in ``conftest.py``.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

BUCKET = "tensorcas-tests"
REGION = "us-east-1"
#: Fake credentials: moto accepts any.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
#: Fewer, faster retries than the default, so that fault tests end quickly.
FAST_RETRY: dict[str, Any] = {
    "max_retries": 4,
    "retry_timeout": timedelta(seconds=10),
    "backoff": {
        "init_backoff": timedelta(milliseconds=20),
        "max_backoff": timedelta(milliseconds=200),
        "base": 2,
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def options(self, endpoint: str | None = None) -> dict[str, Any]:
        """``storage_options`` that reach this server (or a proxy in front of it)."""
        return {
            "endpoint": endpoint or self.endpoint,
            "access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "region": REGION,
            "allow_http": True,
        }

    def env(self) -> dict[str, str]:
        """The environment that reaches this server, as a user would set it."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": REGION}

    def client(self) -> Any:
        """A boto3 client, to look at the bucket without tensorcas."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1, with the test bucket created."""
    pytest.importorskip("obstore")
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = S3Server(f"http://127.0.0.1:{port}")
        s3.client().create_bucket(Bucket=BUCKET)
        yield s3
    finally:
        server.stop()


@pytest.fixture
def s3_url(s3_server: S3Server) -> str:
    """A fresh, empty prefix of the test bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_env(s3_server: S3Server, s3_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3_url``, with the environment set as a user would (endpoint, keys, region), so that
    a bare URL string opens it."""
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_url
