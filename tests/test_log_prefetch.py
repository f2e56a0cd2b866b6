"""Logs read at once on a backend whose reads wait a round trip (``Backend.parallel_reads``):
the same names and records as one after another, the same errors, bounded batches."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import tensorcas
from tensorcas import records
from tensorcas.backends import MemoryBackend
from tensorcas.errors import StoreIOError


class SlowBackend(MemoryBackend):
    """An in-memory backend whose log reads take a while, counting how many run at once."""

    parallel_reads = 8

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most = 0
        self.log_reads = 0
        self.fail: str | None = None
        self._count = threading.Lock()

    def list_info(self, prefix: str):
        # Sizes come with the listing, as an object store's do.
        return ((key, self.stat(key)) for key in self.list(prefix))

    def read_range(self, key: str, offset: int, length: int) -> bytes | None:
        if not key.startswith("logs/"):
            return super().read_range(key, offset, length)
        with self._count:
            self.in_flight += 1
            self.log_reads += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(0.02)
            if self.fail is not None and key.endswith(self.fail):
                raise StoreIOError(f"reading {key} failed: connection reset")
            return super().read_range(key, offset, length)
        finally:
            with self._count:
                self.in_flight -= 1


def _sessions(backend: MemoryBackend, count: int) -> dict[str, torch.Tensor]:
    """``count`` writers one after another, each with its own log; the last rewrites a name."""
    written = {}
    for i in range(count):
        with tensorcas.ContentStoreWriter(backend) as writer:
            t = torch.full((8,), float(i))
            writer.write_tensor(f"w{i}", t)
            writer.write_tensor("shared", t)
            written[f"w{i}"] = t
            written["shared"] = t
    return written


def test_logs_are_read_at_once_with_the_same_result():
    backend = SlowBackend()
    written = _sessions(backend, 12)
    backend.most = backend.log_reads = 0
    reader = tensorcas.ContentStoreReader(backend)
    assert backend.most >= 2, backend.most
    assert backend.log_reads == 12  # one read per log, none twice
    assert sorted(reader.list_tensors()) == sorted(written)
    for name, t in written.items():
        assert torch.equal(reader.read_tensor(name), t)
    # The same store read one log at a time gives the same records.
    backend.parallel_reads = 1
    backend.most = 0
    sequential = tensorcas.ContentStoreReader(backend)
    assert backend.most == 1
    assert sequential.store.records() == reader.store.records()


def test_a_failed_read_fails_the_open_as_before():
    backend = SlowBackend()
    _sessions(backend, 5)
    log = sorted(k for k in backend.list("logs/"))[2]
    backend.fail = log.rsplit("/", 1)[1]
    with pytest.raises(StoreIOError, match="connection reset"):
        tensorcas.ContentStoreReader(backend)
    backend.parallel_reads = 1
    with pytest.raises(StoreIOError, match="connection reset"):
        tensorcas.ContentStoreReader(backend)


def test_batches_stay_bounded(monkeypatch):
    monkeypatch.setattr(records, "PREFETCH_LOGS", 3)
    backend = SlowBackend()
    written = _sessions(backend, 8)
    backend.most = 0
    reader = tensorcas.ContentStoreReader(backend)
    assert 2 <= backend.most <= 3
    assert sorted(reader.list_tensors()) == sorted(written)


def test_appended_lines_are_read_on_refresh():
    backend = SlowBackend()
    _sessions(backend, 3)
    reader = tensorcas.ContentStoreReader(backend)
    with tensorcas.ContentStoreWriter(backend) as writer:
        writer.write_tensor("late", torch.ones(2))
    with tensorcas.ContentStoreWriter(backend) as writer:
        writer.write_tensor("later", torch.zeros(2))
    reader.refresh()
    assert torch.equal(reader.read_tensor("late"), torch.ones(2))
    assert torch.equal(reader.read_tensor("later"), torch.zeros(2))
