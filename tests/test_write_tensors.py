"""``ContentStoreWriter.write_tensors``: many tensors in one call, large CPU storages hashed
ahead on other threads (``hashing.HashAhead``) while earlier ones are stored."""

from __future__ import annotations

import pytest
import torch

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter, hashing
from tensorcas.errors import InvalidNameError, StoreError
from tensorcas.hashing import HashAhead, hash_storage

MIB = 1 << 20


def _mixed() -> list[tuple[str, torch.Tensor]]:
    """Large and small storages, a view into a larger one, two views of one storage."""
    torch.manual_seed(0)
    big = torch.randn(MIB)  # 4 MiB
    shared = torch.randn(512 * 1024)
    return [
        ("a", big),
        ("small", torch.arange(10.0)),
        ("mid", torch.randn(40_000)),  # 160 KiB: not packed, below the overlap threshold
        ("b", torch.randn(3 * MIB // 4)),
        ("view", shared[100:200]),
        ("view2", shared.view(512, 1024)[3]),
        ("c", torch.randn(300 * 1024, dtype=torch.float64)),
    ]


def test_hash_ahead_gives_the_digest_of_every_storage():
    storages = [torch.randn(n).untyped_storage() for n in (MIB // 4, 3 * MIB, MIB // 2, 9 * MIB)]
    hashes = HashAhead(storages, MIB)
    try:
        assert [hashes.digest(i, MIB) for i in range(len(storages))] == [hash_storage(s) for s in storages]
    finally:
        hashes.close()


def test_hash_ahead_hashes_as_far_ahead_as_asked_and_passes_storages_by(monkeypatch):
    monkeypatch.setattr(hashing, "AHEAD_THREADS", 2)  # at least two ahead when asked to look ahead
    storages = [torch.randn(MIB // 4).untyped_storage() for _ in range(20)]  # 1 MiB each
    hashes = HashAhead(storages, 3 * MIB)
    try:
        assert sorted(hashes._futures) == [0, 1, 2, 3]  # the first, and 3 MiB after it
        hashes.digest(0, 0)
        assert sorted(hashes._futures) == [0, 1, 2, 3]
        assert hashes.digest(5, 2 * MIB) == hash_storage(storages[5])  # 4 is passed by
        assert sorted(hashes._futures) == [0, 1, 2, 3, 5, 6, 7]
        assert hashes.passed(4) and not hashes.submitted(4) and hashes.submitted(7)
        assert not hashes.passed(8) and not hashes.submitted(8)
        with pytest.raises(ValueError, match="passed by"):
            hashes.digest(4, 0)
    finally:
        hashes.close()
    assert all(f.done() for f in hashes._futures.values())


def test_hash_ahead_refuses_device_storages():
    with pytest.raises(ValueError, match="CPU"):
        HashAhead([torch.empty(4, device="meta").untyped_storage()], 0)


def test_write_tensors_stores_what_write_tensor_stores(tmp_path):
    items = _mixed()
    with ContentStoreWriter(tmp_path / "one") as w:
        one = [w.write_tensor(name, t) for name, t in items]
    with ContentStoreWriter(tmp_path / "batch") as w:
        batch = w.write_tensors(items)
    assert batch is not None
    assert [(r.name, r.blob, r.shape, r.stride, r.offset) for r in batch] == [
        (r.name, r.blob, r.shape, r.stride, r.offset) for r in one if r is not None
    ]
    reader = ContentStoreReader(tmp_path / "batch")
    for name, t in items:
        assert torch.equal(reader.read_tensor(name), t)
    assert reader.read_tensor("view").untyped_storage().nbytes() == items[4][1].untyped_storage().nbytes()
    assert tensorcas.verify(tmp_path / "batch").ok


def test_write_tensors_hashes_every_byte_again(loc):
    """A change torch's version counter does not see is still stored as new bytes."""
    x = torch.randn(MIB)
    y = torch.randn(MIB)
    with ContentStoreWriter(loc) as w:
        first = w.write_tensors([("x", x), ("y", y)])
        x.data.view(torch.int32)[12345] ^= 1  # one bit, behind autograd's back
        second = w.write_tensors([("x2", x), ("y2", y)])
    assert first is not None and second is not None
    assert second[0].blob != first[0].blob and second[1].blob == first[1].blob
    assert torch.equal(ContentStoreReader(loc).read_tensor("x2"), x)


def test_nothing_is_written_if_a_name_is_invalid_or_the_caller_refuses(loc):
    big = torch.randn(MIB)
    with ContentStoreWriter(loc) as w:
        with pytest.raises(InvalidNameError):
            w.write_tensors([("ok", big), ("bad/../name", big)])

        def refuse() -> None:
            raise StoreError("not now")

        with pytest.raises(StoreError, match="not now"):
            w.write_tensors([("ok", big)], before_writing=refuse)
    assert ContentStoreReader(loc).list_tensors() == []
    assert tensorcas.du(loc).stored_bytes == 0


def test_write_tensors_in_background_mode(loc):
    items = _mixed()
    calls = []
    with ContentStoreWriter(loc, background=True) as w:
        assert w.write_tensors(items, before_writing=lambda: calls.append(1)) is None
    assert calls == [1]
    reader = ContentStoreReader(loc)
    for name, t in items:
        assert torch.equal(reader.read_tensor(name), t)


def test_write_tensors_of_new_and_stored_bytes_in_any_order(loc):
    """New bytes are hashed while they are written, stored ones ahead; either way each record
    names the digest of its bytes, and nothing stored is written twice."""
    torch.manual_seed(1)
    weights = [torch.randn(MIB // 4 + i) for i in range(24)]  # about 1 MiB each, all different
    with ContentStoreWriter(loc) as w:
        first = w.write_tensors([(f"s0/{i}", t) for i, t in enumerate(weights)])
        stored = tensorcas.du(loc).stored_bytes
        for i in (3, 11, 12, 20):
            weights[i].add_(1)
        second = w.write_tensors([(f"s1/{i}", t) for i, t in enumerate(weights)])
    assert first is not None and second is not None
    for i, t in enumerate(weights):
        assert second[i].blob == hash_storage(t.untyped_storage())
        assert (second[i].blob == first[i].blob) == (i not in (3, 11, 12, 20))
    assert tensorcas.du(loc).stored_bytes == stored + sum(weights[i].nbytes for i in (3, 11, 12, 20))
    assert tensorcas.verify(loc).ok


# -- delete_tensors ---------------------------------------------------------------------------


def test_delete_tensors_checks_every_name_before_removing_any(loc):
    with ContentStoreWriter(loc) as w:
        for i in range(5):
            w.write_tensor(f"t/{i}", torch.full((3,), float(i)))
    with ContentStoreWriter(loc) as w:
        with pytest.raises(tensorcas.TensorNotFoundError, match="t/9"):
            w.delete_tensors(["t/0", "t/1", "t/9"])
        assert ContentStoreReader(loc).list_tensors() == [f"t/{i}" for i in range(5)]
        w.delete_tensors(["t/3", "t/1", "t/3"])  # a name twice is removed once
        with pytest.raises(tensorcas.TensorNotFoundError, match="deleted"):
            w.delete_tensors(["t/1"])
    reader = ContentStoreReader(loc)
    assert reader.list_tensors() == ["t/0", "t/2", "t/4"]
    assert torch.equal(reader.read_tensor("t/4"), torch.full((3,), 4.0))


def test_delete_tensors_reads_the_logs_once(loc, monkeypatch):
    """Removing thousands of names (an old checkpoint, a prefix) reads the store's logs once,
    not once per name, and appends their entries in few writes."""
    from tensorcas import logwriter

    monkeypatch.setattr(logwriter, "DELETES_PER_APPEND", 100)
    names = [f"n/{i}" for i in range(250)]
    with ContentStoreWriter(loc) as w:
        w.write_tensors([(n, torch.zeros(1)) for n in names])
    with ContentStoreWriter(loc) as w:
        refreshes = w.store.log.refreshes
        appends = []
        real = w._log._append
        monkeypatch.setattr(w._log, "_append", lambda line: (appends.append(line), real(line)))
        w.delete_tensors(names)
        assert w.store.log.refreshes == refreshes + 1
        assert len(appends) == 3  # 100 + 100 + 50 entries (the log's header aside)
    assert ContentStoreReader(loc).list_tensors() == []
    assert tensorcas.verify(loc).ok
