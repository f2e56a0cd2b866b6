"""A backend written outside the package with only the core operations (no append, no local path,
no touch, no staging) passes the conformance suite and holds a store that the writer, the reader,
``verify`` and ``gc`` work on: every ability above the core has a fallback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import torch

import tensorcas
from tensorcas.backends import Backend, ObjectInfo
from tensorcas.backends.base import Data, chunks_of
from tensorcas.testing import BackendTests


class DictBackend(Backend):
    """Objects in a dict: the six core operations and nothing else."""

    def __init__(self) -> None:
        self.location = "dict://test"
        self.objects: dict[str, tuple[bytes, float]] = {}
        self.lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        found = self.objects.get(key)
        return None if found is None else found[0]

    def read_range(self, key: str, offset: int, length: int) -> bytes | None:
        found = self.objects.get(key)
        return None if found is None else found[0][offset : offset + length]

    def stat(self, key: str) -> ObjectInfo | None:
        found = self.objects.get(key)
        return None if found is None else ObjectInfo(len(found[0]), found[1])

    def put_if_absent(self, key: str, data: Data, *, overwrite: bool = False) -> bool:
        whole = b"".join(chunks_of(data))
        with self.lock:
            if key in self.objects and not overwrite:
                return False
            self.objects[key] = (whole, time.time())
            return True

    def delete(self, key: str) -> bool:
        with self.lock:
            return self.objects.pop(key, None) is not None

    def list(self, prefix: str) -> Iterator[str]:
        start = prefix.strip("/") + "/" if prefix.strip("/") else ""
        return iter([k for k in list(self.objects) if k.startswith(start)])


class TestDictBackend(BackendTests):
    @pytest.fixture
    def backend(self) -> Backend:
        return DictBackend()

    def raw_get(self, backend: Backend, key: str) -> bytes | None:
        assert isinstance(backend, DictBackend)
        found = backend.objects.get(key)
        return None if found is None else found[0]


def test_small_tensors_are_stored_loose_without_appending():
    """Without appends there are no packs: each small blob is an object of its own, and each log
    is published again whole with every entry."""
    backend = DictBackend()
    with tensorcas.ContentStoreWriter(backend) as writer:
        for i in range(5):
            writer.write_tensor(f"t{i}", torch.full((4,), float(i)))
    keys = set(backend.objects)
    assert not any(k.startswith("packs/") for k in keys)
    assert sum(k.startswith("blobs/") for k in keys) == 5
    assert sum(k.startswith("logs/") for k in keys) == 1
    reader = tensorcas.ContentStoreReader(backend)
    assert [reader.read_tensor(f"t{i}")[0].item() for i in range(5)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert tensorcas.verify(backend).ok


def test_background_writer_on_a_core_backend():
    backend = DictBackend()
    with tensorcas.ContentStoreWriter(backend, background=True) as writer:
        for i in range(20):
            writer.write_tensor(f"x/{i}", torch.arange(1000.0) + i)
    reader = tensorcas.ContentStoreReader(backend, verify=True)
    assert all(torch.equal(reader.read_tensor(f"x/{i}"), torch.arange(1000.0) + i) for i in range(20))
