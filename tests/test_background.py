"""Background writing: snapshots taken at call time, order kept, failures surfaced."""

from __future__ import annotations

import pytest
import torch

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter


def test_snapshot_is_taken_when_write_tensor_returns(loc):
    x = torch.arange(300_000, dtype=torch.float32)  # large: a loose blob
    small = torch.zeros(8)
    with ContentStoreWriter(loc, background=True, max_pending_bytes=4 << 20) as writer:
        for step in range(5):
            assert writer.write_tensor(f"x/{step}", x) is None
            writer.write_tensor(f"s/{step}", small)
            x.add_(1)  # the training step changes the weights right after the call
            small.add_(1)
    reader = ContentStoreReader(loc)
    for step in range(5):
        assert torch.equal(reader.read_tensor(f"x/{step}"), torch.arange(300_000, dtype=torch.float32) + step)
        assert torch.equal(reader.read_tensor(f"s/{step}"), torch.full((8,), float(step)))


def test_views_still_share_a_storage(loc):
    base = torch.randn(64, 64)
    with ContentStoreWriter(loc, background=True) as writer:
        writer.write_tensor("base", base)
        writer.write_tensor("view", base[3:, 5:].t())
    reader = ContentStoreReader(loc)
    a, b = reader.read_tensor("base"), reader.read_tensor("view")
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    assert torch.equal(b, base[3:, 5:].t())


def test_later_write_of_a_name_wins(loc):
    with ContentStoreWriter(loc, background=True) as writer:
        for value in range(20):
            writer.write_tensor("w", torch.full((4,), float(value)))
    assert ContentStoreReader(loc).read_tensor("w")[0].item() == 19.0


def test_failures_surface_on_flush(loc, monkeypatch):
    writer = ContentStoreWriter(loc, background=True)
    writer.write_tensor("ok", torch.ones(3))
    writer.flush()

    def disk_full(self, line):
        raise tensorcas.StoreIOError("appending failed: No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(tensorcas.store.LogWriter, "_append", disk_full)
        writer.write_tensor("lost", torch.ones(100_000))  # large: queued, fails in the worker
        with pytest.raises(tensorcas.StoreIOError, match="No space"):
            writer.flush()
        with pytest.raises(tensorcas.StoreIOError, match="No space"):
            writer.write_tensor("small", torch.ones(3))  # small and nothing queued: written now
    writer.write_tensor("after", torch.ones(3))
    writer.close()
    reader = ContentStoreReader(loc)
    assert reader.list_tensors() == ["ok", "after"]


def test_pending_bytes_are_bounded(loc):
    x = torch.randn(1 << 18)  # 1 MiB
    with ContentStoreWriter(loc, background=True, max_pending_bytes=2 << 20) as writer:
        for i in range(8):
            writer.write_tensor(f"x{i}", x)
            assert writer._queue is not None and writer._queue._pending <= 2 << 20
    assert len(ContentStoreReader(loc).list_tensors()) == 8


def test_unchanged_tensors_are_not_copied(loc, monkeypatch):
    x = torch.randn(1 << 16)  # 256 KiB: hashed at once in background mode
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", x)
    copies = []
    real_snapshot = tensorcas.writer.snapshot
    monkeypatch.setattr(tensorcas.writer, "snapshot", lambda t: copies.append(t) or real_snapshot(t))
    with ContentStoreWriter(loc, background=True) as writer:
        writer.write_tensor("x_again", x)
        writer.write_tensor("y", x + 1)
    assert len(copies) == 1  # only the new bytes were copied
    reader = ContentStoreReader(loc)
    assert torch.equal(reader.read_tensor("x_again"), x) and torch.equal(reader.read_tensor("y"), x + 1)


def test_large_new_tensors_are_copied_and_hashed_by_the_worker(loc, monkeypatch):
    """A large storage that is probably new is copied at once and hashed while the worker writes
    the copy; one probably stored already (the same storage again, or a name that holds a blob
    of its size) is hashed first, and not copied when its blob is there."""
    from tensorcas.hashing import OVERLAP_THRESHOLD

    copies = []
    real_snapshot = tensorcas.writer.snapshot
    monkeypatch.setattr(tensorcas.writer, "snapshot", lambda t: copies.append(t) or real_snapshot(t))
    hashed_first = []
    real_hash = tensorcas.writer.hash_storage
    monkeypatch.setattr(tensorcas.writer, "hash_storage", lambda s: hashed_first.append(s) or real_hash(s))
    x = torch.randn(OVERLAP_THRESHOLD // 4 + 100)
    expected = x.clone()
    with ContentStoreWriter(loc, background=True) as writer:
        writer.write_tensor("x", x)
        x.add_(1)  # after the call: the copy keeps the bytes as they were
        assert len(copies) == 1 and not hashed_first
        writer.flush()
        writer.write_tensor("x_view", x[1:])  # the same storage: hashed first, new bytes: copied
        assert len(hashed_first) == 1 and len(copies) == 2
    with ContentStoreWriter(loc, background=True) as writer:
        writer.write_tensor("x", expected.clone())  # "x" holds a blob of this size: hashed first
        assert len(hashed_first) == 2 and len(copies) == 2  # stored already: not copied
    reader = ContentStoreReader(loc, verify=True)
    assert torch.equal(reader.read_tensor("x"), expected)
    assert torch.equal(reader.read_tensor("x_view"), expected[1:] + 1)


def test_a_tensor_larger_than_the_pending_limit_is_written_at_once(loc, monkeypatch):
    x = torch.randn(1 << 18)  # 1 MiB
    monkeypatch.setattr(tensorcas.writer, "snapshot", lambda t: pytest.fail("copied a huge tensor"))
    expected = x.clone()
    with ContentStoreWriter(loc, background=True, max_pending_bytes=1 << 19) as writer:
        writer.write_tensor("x", x)
        x.add_(1)
    assert torch.equal(ContentStoreReader(loc).read_tensor("x"), expected)


def test_copies_wait_for_room_under_the_pending_limit(loc, monkeypatch):
    """A new large tensor is copied only once its bytes fit under ``max_pending_bytes``: with
    the worker held up, the copies waiting to be written never exceed the limit."""
    import threading

    from tensorcas.hashing import OVERLAP_THRESHOLD

    n = OVERLAP_THRESHOLD // 4 + 256  # a little over 1 MiB of float32
    tensors = [torch.randn(n) for _ in range(4)]
    limit = 2 * tensors[0].nbytes  # room for two copies
    gate = threading.Event()
    live: list[int] = []  # bytes of copies made and not yet written, after each copy
    state = {"copies": 0}
    real_snapshot = tensorcas.writer.snapshot
    real_write = tensorcas.writer.ContentStoreWriter._write_tensor

    def counting_snapshot(t):
        state["copies"] += t.untyped_storage().nbytes()
        live.append(state["copies"])
        return real_snapshot(t)

    def held_write(self, name, tensor, **kwargs):
        gate.wait(10)
        try:
            return real_write(self, name, tensor, **kwargs)
        finally:
            state["copies"] -= tensor.untyped_storage().nbytes()

    monkeypatch.setattr(tensorcas.writer, "snapshot", counting_snapshot)
    monkeypatch.setattr(tensorcas.writer.ContentStoreWriter, "_write_tensor", held_write)
    writer = ContentStoreWriter(loc, background=True, max_pending_bytes=limit)
    done = threading.Event()

    def produce():
        for i, t in enumerate(tensors):
            writer.write_tensor(f"t{i}", t)
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        assert not done.wait(0.5)  # the third write waits for room, before copying
        assert live == [limit // 2, limit]
    finally:
        gate.set()
        thread.join(10)
        writer.close()
    assert max(live) <= limit and len(live) == 4
    reader = ContentStoreReader(loc)
    assert all(torch.equal(reader.read_tensor(f"t{i}"), t) for i, t in enumerate(tensors))
