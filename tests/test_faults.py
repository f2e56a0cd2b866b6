"""Fault injection: the operating system fails each step of a write, one step at a time.

The local backend's calls into ``os`` go through a proxy that fails the k-th call of one function
(``write``, ``fsync``, ``link``...) with a chosen error.  For every k up to the number of calls a
write makes, the caller must get a ``StoreIOError`` whose ``__cause__`` is the OS error, the store
must stay consistent (``verify`` finds no error), what was stored before must read back unchanged,
and the same writer must go on working once the fault is gone.
"""

from __future__ import annotations

import errno
import os
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

import tensorcas
from storetools import assert_verify_ok, bits, unexpected_files
from tensorcas import ContentStoreReader, ContentStoreWriter, StoreIOError
from tensorcas.backends import local as local_backend
from tensorcas.backends import local_files, local_gc

#: Functions of ``os`` the local backend calls on its write path; each is failed in turn.
FAULTY = ("open", "write", "fsync", "link", "replace", "rename", "fstat", "lstat", "utime", "mkdir")


class FaultyOS(types.SimpleNamespace):
    """Stands in for ``os`` inside ``tensorcas.backends.local``: everything passes through, except
    that call number ``fail_at`` (0-based) of ``func`` fails, as ``mode`` says."""

    def __init__(self, func: str, fail_at: int, mode: str) -> None:
        super().__init__()
        self.func = func
        self.fail_at = fail_at
        self.mode = mode
        self.calls = 0
        self.raised: OSError | None = None

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name != self.func:
            return real
        return self._wrap(real)

    def _wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def faulty(*args: Any, **kwargs: Any) -> Any:
            index = self.calls
            self.calls += 1
            if index != self.fail_at:
                return real(*args, **kwargs)
            if self.mode == "short":
                # Half of the bytes land, then the disk is full: the realistic partial write.
                fd, data = args
                half = max(1, len(memoryview(data).cast("B")) // 2)
                real(fd, memoryview(data).cast("B")[:half])
                self.fail_at = self.calls  # the next call fails with ENOSPC
                self.mode = "ENOSPC"
                return half
            code = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO, "EACCES": errno.EACCES}[self.mode]
            self.raised = OSError(code, os.strerror(code))
            raise self.raised

        return faulty


@contextmanager
def faulty_os(
    monkeypatch: pytest.MonkeyPatch, func: str, fail_at: int, mode: str
) -> Iterator[FaultyOS]:
    proxy = FaultyOS(func, fail_at, mode)
    with monkeypatch.context() as m:
        for module in (local_backend, local_files, local_gc):  # every module of the backend
            m.setattr(module, "os", proxy)
        yield proxy


def _tensors() -> dict[str, torch.Tensor]:
    """Stored before the fault: a small tensor, a view of it, and one larger than any pack limit."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(64, generator=g)
    return {
        "before/small": base,
        "before/view": base[8:40].view(4, 8),
        "before/large": torch.randn(300_000, generator=g),
    }


def _modes(func: str) -> list[str]:
    if func == "write":
        return ["ENOSPC", "EIO", "short"]
    if func in ("open", "mkdir"):
        return ["ENOSPC", "EACCES"]
    return ["EIO"]


VICTIMS = {
    "small": lambda: torch.arange(32, dtype=torch.float32) * 0.5,
    "large": lambda: torch.linspace(0, 1, 400_000, dtype=torch.float64),
    # Written while it is hashed, on two threads (hashing.hash_while_writing).
    "huge": lambda: torch.linspace(0, 1, 1_200_000, dtype=torch.float64),
}


def _check_store(
    loc: str, expected: dict[str, torch.Tensor], maybe: dict[str, torch.Tensor]
) -> None:
    """Everything in ``expected`` reads back bit-exact; names in ``maybe`` are absent or exact."""
    assert_verify_ok(loc)
    assert unexpected_files(loc) == []
    reader = ContentStoreReader(loc, verify=True)
    for name, tensor in expected.items():
        got = reader.read_tensor(name)
        assert (
            got.dtype == tensor.dtype
            and got.shape == tensor.shape
            and got.stride() == tensor.stride()
        )
        assert bits(got) == bits(tensor), name
    for name, tensor in maybe.items():
        if name in reader:
            assert bits(reader.read_tensor(name)) == bits(tensor), name


def _run_write_faults(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, durable: bool, victim_kind: str
) -> int:
    """Fail every step of one write_tensor, one scenario per step; return how many faults hit."""
    hits = 0
    scenario = 0
    for func in FAULTY:
        for mode in _modes(func):
            fail_at = 0
            while True:
                scenario += 1
                loc = os.fspath(tmp_path / f"s{scenario}")
                before = _tensors()
                with ContentStoreWriter(loc, durable=durable) as first:
                    for name, tensor in before.items():
                        first.write_tensor(name, tensor)
                writer = ContentStoreWriter(
                    loc, durable=durable
                )  # a fresh writer: log not yet created
                victim = VICTIMS[victim_kind]()
                error: tensorcas.StoreError | None = None
                with faulty_os(monkeypatch, func, fail_at, mode) as proxy:
                    try:
                        writer.write_tensor("victim", victim)
                    except tensorcas.StoreError as exc:
                        error = exc
                if error is None:
                    assert proxy.calls <= fail_at or mode == "short", (func, mode, fail_at)
                    if proxy.calls <= fail_at:
                        break  # this write makes fewer calls: every step of it was failed
                else:
                    hits += 1
                    assert isinstance(error, StoreIOError), (func, mode, fail_at, repr(error))
                    assert isinstance(error.__cause__, OSError), (func, mode, fail_at)
                    if proxy.raised is not None:
                        assert error.__cause__ is proxy.raised
                    assert loc in str(error) or "tmp" in str(error), str(error)
                    # The store is consistent and the earlier tensors are intact.
                    _check_store(loc, before, {"victim": victim})
                # The same writer keeps working once the fault is gone.
                writer.write_tensor("victim", victim)
                writer.write_tensor("after", victim[: victim.numel() // 2])
                writer.delete_tensor("before/view")
                expected = {k: v for k, v in before.items() if k != "before/view"}
                expected.update(victim=victim, after=victim[: victim.numel() // 2])
                _check_store(loc, expected, {})
                assert "before/view" not in ContentStoreReader(loc)
                writer.close()
                fail_at += 1
    return hits


@pytest.mark.parametrize("durable", [False, True], ids=["default", "durable"])
@pytest.mark.parametrize("victim_kind", sorted(VICTIMS))
def test_every_failed_step_leaves_a_consistent_store(tmp_path, monkeypatch, durable, victim_kind):
    hits = _run_write_faults(tmp_path, monkeypatch, durable, victim_kind)
    print(f"faults injected and survived: {hits}")
    # Each write opens, writes, fsyncs (when durable) and links: faults must have hit.
    assert hits >= (12 if durable else 8), hits


@pytest.mark.parametrize("func", ["write", "fsync", "open"])
def test_failed_delete_then_retry(tmp_path, monkeypatch, func):
    """A delete whose log append fails leaves the tensor readable; retrying deletes it."""
    loc = os.fspath(tmp_path / "store")
    x = torch.randn(10)
    writer = ContentStoreWriter(loc, durable=True)
    writer.write_tensor("x", x)
    writer.write_tensor("y", x * 2)
    with faulty_os(monkeypatch, func, 0, "EIO") as proxy:
        try:
            writer.delete_tensor("x")
        except tensorcas.StoreError as exc:
            assert isinstance(exc, StoreIOError) and exc.__cause__ is proxy.raised
    _check_store(loc, {"y": x * 2}, {"x": x})
    if "x" in ContentStoreReader(loc):
        writer.delete_tensor("x")
    assert "x" not in ContentStoreReader(loc)
    writer.write_tensor("z", x)
    _check_store(loc, {"y": x * 2, "z": x}, {})


@pytest.mark.parametrize("func", ["open", "write", "link", "fsync"])
def test_creating_a_store_fails_cleanly(tmp_path, monkeypatch, func):
    """A failure while the store marker is written leaves no store, or a complete one."""
    loc = os.fspath(tmp_path / "store")
    with faulty_os(monkeypatch, func, 0, "EIO"), pytest.raises(StoreIOError) as info:
        ContentStoreWriter(loc, durable=True)
    assert isinstance(info.value.__cause__, OSError)
    assert not os.path.exists(os.path.join(loc, "tensorcas.json"))
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.ones(3))
    _check_store(loc, {"x": torch.ones(3)}, {})


def test_overwriting_a_damaged_blob_fails_cleanly(tmp_path, monkeypatch):
    """A blob cut short is replaced by ``os.replace`` on the next write of the same bytes; if that
    fails, the caller is told and a later write still heals it."""
    loc = os.fspath(tmp_path / "store")
    x = torch.randn(200_000)
    with ContentStoreWriter(loc) as writer:
        record = writer.write_tensor("x", x)
    hex_digest = record.blob.split(":")[1]
    path = os.path.join(loc, "blobs", hex_digest[:2], hex_digest[2:])
    if not os.path.exists(path):
        pytest.skip("blob is not stored as a file of its own")
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.truncate(1000)
    writer = ContentStoreWriter(loc)
    with faulty_os(monkeypatch, "replace", 0, "EIO") as proxy, pytest.raises(StoreIOError) as info:
        writer.write_tensor("x2", x)
    assert info.value.__cause__ is proxy.raised
    assert os.path.getsize(path) == 1000  # nothing was half-replaced
    writer.write_tensor("x2", x)
    _check_store(loc, {"x": x, "x2": x}, {})
