from __future__ import annotations

import os

import pytest


@pytest.fixture
def loc(tmp_path) -> str:
    """A path where a new store may be created."""
    return os.fspath(tmp_path / "store")


# The object-storage servers on loopback and their fixtures: Azurite, Azure Blob Storage's
# emulator, when installed (azure_server, az_url, az_env); moto's S3 (s3_server, s3_url, s3_env).
from azfixtures import az_env, az_url, azure_server  # noqa: E402, F401
from s3fixtures import s3_env, s3_server, s3_url  # noqa: E402, F401
