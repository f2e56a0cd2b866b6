from __future__ import annotations

import os

import pytest


@pytest.fixture
def loc(tmp_path) -> str:
    """A path where a new store may be created."""
    return os.fspath(tmp_path / "store")


# The S3 server on loopback and its fixtures (s3_server, s3_url, s3_env).
from s3fixtures import s3_env, s3_server, s3_url  # noqa: E402, F401
