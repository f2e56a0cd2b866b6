from __future__ import annotations

import os

import pytest


@pytest.fixture
def loc(tmp_path) -> str:
    """A path where a new store may be created."""
    return os.fspath(tmp_path / "store")
