"""An Azure Blob Storage server on loopback for the ``az://`` tests: Azurite, Microsoft's emulator
(an npm package; ``scripts/setup.sh`` installs it under ``.ci/azurite``), started once per test
session on a free port, in memory, and stopped at its end (or by the kernel when the test process
dies).  Without Azurite the tests that use it are skipped, saying how to install it.

Each test gets a fresh prefix of one container.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from s3fixtures import free_port

CONTAINER = "tensorcas-tests"
#: Azurite's well-known development account and key (public, in Microsoft's documentation).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LOCAL = Path(__file__).resolve().parent.parent / ".ci" / "azurite" / "node_modules" / ".bin"


def azurite_command() -> str | None:
    """The ``azurite-blob`` program: the one set-up installs, else one on ``PATH``."""
    local = _LOCAL / "azurite-blob"
    return os.fspath(local) if local.exists() else shutil.which("azurite-blob")


@dataclass(frozen=True)
class AzureServer:
    endpoint: str  # http://127.0.0.1:PORT

    def options(self) -> dict[str, Any]:
        """``storage_options`` that reach this server with the development account."""
        return {
            "account_name": ACCOUNT,
            "account_key": KEY,
            "endpoint": f"{self.endpoint}/{ACCOUNT}",
        }

    def env(self) -> dict[str, str]:
        """The environment that reaches this server, as a user of the emulator would set it."""
        return {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": self.endpoint}

    def create_container(self, name: str) -> None:
        """Create a container (obstore does not), with a request signed by the account key."""
        headers = {"x-ms-date": email.utils.formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
        signed = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
        text = (
            "PUT\n\n\n\n\napplication/octet-stream\n" + "\n" * 6 + signed
            + f"/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
        )
        digest = hmac.new(base64.b64decode(KEY), text.encode(), hashlib.sha256).digest()
        headers["Authorization"] = f"SharedKey {ACCOUNT}:{base64.b64encode(digest).decode()}"
        headers["Content-Type"] = "application/octet-stream"
        url = f"{self.endpoint}/{ACCOUNT}/{name}?restype=container"
        request = urllib.request.Request(url, method="PUT", headers=headers, data=b"")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201, answer.status


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    """Azurite's blob service on 127.0.0.1, with the test container created."""
    pytest.importorskip("obstore")
    command = azurite_command()
    if command is None:
        pytest.skip(
            "Azurite is not installed: scripts/setup.sh installs it (npm install --prefix "
            ".ci/azurite azurite), or put azurite-blob on PATH"
        )
    port = free_port()
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [command, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
             "--skipApiVersionCheck", "--loose", "--silent"],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Azurite did not start: {log.read_text()[-2000:]}")
                time.sleep(0.05)
        server = AzureServer(f"http://127.0.0.1:{port}")
        server.create_container(CONTAINER)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def az_url(azure_server: AzureServer) -> str:
    """A fresh, empty prefix of the test container."""
    return f"az://{CONTAINER}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def az_env(azure_server: AzureServer, az_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``az_url``, with the environment set as a user of the emulator would, so that a bare URL
    string opens it."""
    for name in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in azure_server.env().items():
        monkeypatch.setenv(name, value)
    return az_url
