"""Each backend runs the package's conformance suite (``tensorcas.testing``); the local one also
keeps its on-disk promises, checked on the files themselves."""

from __future__ import annotations

import os

import pytest

from tensorcas.backends import LocalBackend, MemoryBackend, read_only
from tensorcas.backends.base import Backend
from tensorcas.errors import StoreError
from tensorcas.testing import DATA, KEY, BackendTests


class TestMemoryBackend(BackendTests):
    @pytest.fixture
    def backend(self) -> Backend:
        return MemoryBackend()


class TestLocalBackend(BackendTests):
    @pytest.fixture
    def backend(self, tmp_path) -> Backend:
        return LocalBackend(tmp_path / "store")

    # Look at the files, not through the backend.
    def raw_get(self, backend: Backend, key: str) -> bytes | None:
        path = os.path.join(backend.location, *key.split("/"))
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read()

    def raw_put(self, backend: Backend, key: str, data: bytes) -> None:
        path = os.path.join(backend.location, *key.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            os.chmod(path, 0o644)
        with open(path, "wb") as f:
            f.write(data)


class TestLocalDurableBackend(BackendTests):
    @pytest.fixture
    def backend(self, tmp_path) -> Backend:
        return LocalBackend(tmp_path, durable=True)


# -- what only the local backend promises -------------------------------------------------------


def test_local_temporary_lives_in_the_target_directory(tmp_path):
    backend = LocalBackend(tmp_path)
    staged = backend.stage("blobs/ab")
    staged.write(DATA)
    names = os.listdir(tmp_path / "blobs" / "ab")
    assert len(names) == 1 and names[0].startswith(".tmp-")
    assert staged.publish(KEY)
    assert os.listdir(tmp_path / "blobs" / "ab") == ["cdef"]
    with open(tmp_path / "blobs" / "ab" / "cdef", "rb") as f:
        assert f.read() == DATA


def test_local_published_blob_is_read_only(tmp_path):
    backend = LocalBackend(tmp_path)
    backend.put_if_absent(KEY, DATA)
    assert os.stat(tmp_path / "blobs" / "ab" / "cdef").st_mode & 0o222 == 0


def test_local_hidden_files_are_not_keys(tmp_path):
    backend = LocalBackend(tmp_path)
    backend.put_if_absent(KEY, DATA)
    (tmp_path / "blobs" / "ab" / ".gc-cdef.12345678").write_bytes(b"trash")
    (tmp_path / "blobs" / ".DS_Store").write_bytes(b"junk")
    assert list(backend.list("blobs")) == [KEY]
    temps = {t.key: t.restores for t in backend.temporaries()}
    assert temps == {"blobs/ab/.gc-cdef.12345678": True}
    assert backend.delete_temporary("blobs/ab/.gc-cdef.12345678")
    with pytest.raises(ValueError):
        backend.delete_temporary(KEY)  # not a temporary: refused, the blob stays
    assert backend.get(KEY) == DATA


def test_local_refuses_symlinks(tmp_path):
    outside = tmp_path / "secret"
    outside.write_bytes(b"secret")
    root = tmp_path / "store"
    (root / "blobs" / "ab").mkdir(parents=True)
    os.symlink(outside, root / "blobs" / "ab" / "cdef")
    backend = LocalBackend(root)
    with pytest.raises(StoreError):
        backend.get(KEY)
    with pytest.raises(StoreError):
        backend.stat(KEY)
    os.symlink(tmp_path, root / "blobs" / "cd")
    with pytest.raises(StoreError):
        backend.get("blobs/cd/secret")


def test_local_read_only_creates_nothing(tmp_path):
    LocalBackend(tmp_path).put_if_absent(KEY, DATA)
    backend = read_only(LocalBackend(tmp_path))
    with pytest.raises(StoreError):
        backend.put_if_absent("logs/w.log", b"x")
    assert backend.get(KEY) == DATA
    assert not os.path.exists(tmp_path / "logs")
