"""Reading many small tensors: windows over sealed packs, the direct small-tensor path, and the
compact index of packed places, each checked against the general path it stands in for."""

from __future__ import annotations

import random

import pytest
import torch

import tensorcas
from tensorcas.backends.local import LocalBackend
from tensorcas.blobs import windows
from tensorcas.format import TensorRecord
from tensorcas.format._fast import put_record
from tensorcas.format.records import parsed_record

N = 300


@pytest.fixture
def pack_reads(monkeypatch):
    """Counts reads of pack files through the local backend."""
    count = {"n": 0, "bytes": 0}
    original = LocalBackend.read_range

    def counting(self, key, offset, length):
        data = original(self, key, offset, length)
        if key.startswith("packs/"):
            count["n"] += 1
            count["bytes"] += len(data or b"")
        return data

    monkeypatch.setattr(LocalBackend, "read_range", counting)
    return count


def _small(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {f"t{i:04d}": torch.rand(int(torch.randint(16, 600, (1,), generator=gen)), generator=gen) for i in range(N)}


def test_in_order_reads_of_a_sealed_pack_use_windows(tmp_path, pack_reads):
    tensors = _small()
    with tensorcas.ContentStoreWriter(str(tmp_path)) as writer:
        for name, t in tensors.items():
            writer.write_tensor(name, t)
    reader = tensorcas.ContentStoreReader(str(tmp_path))
    pack_reads["n"] = 0
    for name, t in tensors.items():
        assert torch.equal(reader.read_tensor(name), t)
    # One read, then windows of 1 MiB: far fewer reads than tensors.
    assert pack_reads["n"] <= 4, pack_reads["n"]


def test_reads_that_jump_around_read_no_more_than_they_need(tmp_path, pack_reads):
    """One tensor of a large pack costs its own bytes; reads in random order read a window only
    where one starts near where the previous ended."""
    gen = torch.Generator().manual_seed(1)
    tensors = {f"t{i:03d}": torch.rand(12_000, generator=gen) for i in range(120)}  # 48 KB each
    with tensorcas.ContentStoreWriter(str(tmp_path)) as writer:
        for name, t in tensors.items():
            writer.write_tensor(name, t)
    total = sum(t.nbytes for t in tensors.values())
    reader = tensorcas.ContentStoreReader(str(tmp_path))
    pack_reads["n"] = pack_reads["bytes"] = 0
    assert torch.equal(reader.read_tensor("t050"), tensors["t050"])
    assert (pack_reads["n"], pack_reads["bytes"]) == (1, 48_000)
    names = list(tensors)
    random.Random(3).shuffle(names)
    reader = tensorcas.ContentStoreReader(str(tmp_path))
    pack_reads["n"] = pack_reads["bytes"] = 0
    for name in names:
        assert torch.equal(reader.read_tensor(name), tensors[name])
    assert pack_reads["bytes"] <= total + 3 * windows.WINDOW, pack_reads


def test_a_pack_still_written_is_never_read_by_windows(tmp_path, pack_reads):
    """An open pack may end inside a blob being written: its blobs are read one by one."""
    tensors = _small(2)
    writer = tensorcas.ContentStoreWriter(str(tmp_path))
    try:
        for name, t in tensors.items():
            writer.write_tensor(name, t)
        writer.flush()
        reader = tensorcas.ContentStoreReader(str(tmp_path))
        pack_reads["n"] = 0
        for name, t in tensors.items():
            assert torch.equal(reader.read_tensor(name), t)
        assert pack_reads["n"] == N
        # Appended after the reader's reads: found, whole.
        late = torch.rand(100)
        writer.write_tensor("late", late)
        writer.flush()
        assert torch.equal(reader.read_tensor("late"), late)
    finally:
        writer.close()


def test_window_unit_rules():
    reads: list[tuple[str, int, int]] = []
    data = bytes(range(256)) * 8192  # 2 MiB

    def read_range(key: str, offset: int, length: int) -> bytes | None:
        reads.append((key, offset, length))
        return data[offset : offset + length]

    w = windows.PackWindows(read_range)
    assert w.read("packs/a.pack", 0, 100) is None  # first read: the caller reads it
    got = w.read("packs/a.pack", 100, 50)  # in order: a first, small window from 100
    assert got is not None and bytes(got) == data[100:150]
    assert reads == [("packs/a.pack", 100, windows.FIRST_WINDOW)]
    assert bytes(w.read("packs/a.pack", 5000, 10) or b"") == data[5000:5010]  # inside: no read
    assert len(reads) == 1
    # A blob across the window's end goes on with the run: a window twice as large, which
    # takes the place of the one passed.
    end = 100 + windows.FIRST_WINDOW
    assert bytes(w.read("packs/a.pack", end - 5, 10) or b"") == data[end - 5 : end + 5]
    assert reads[-1] == ("packs/a.pack", end - 5, 2 * windows.FIRST_WINDOW)
    assert w.windows == [("packs/a.pack", end - 5, 2 * windows.FIRST_WINDOW)]
    assert w.read("packs/a.pack", 1 << 30, 10) is None  # far away: not in order
    # A window never reaches offsets near the limit of file offsets.
    w.read("packs/b.pack", (1 << 62) - 10, 5)
    assert w.read("packs/b.pack", (1 << 62) - 5, 5) is None
    # Windows grow up to WINDOW as a run goes on.
    offset, sizes = 0, []
    w.read("packs/g.pack", 0, 10)
    offset = 10
    while offset < len(data) - windows.WINDOW:
        before = len(reads)
        w.read("packs/g.pack", offset, 10)
        if len(reads) > before:
            sizes.append(reads[-1][2])
        offset += 1000
    assert sizes[:5] == [windows.FIRST_WINDOW << i for i in range(5)]
    assert max(sizes) == windows.WINDOW
    # Memory stays bounded, in bytes and in windows.
    for i in range(3 * windows.MAX_WINDOWS):
        key = f"packs/c{i}.pack"
        w.read(key, 0, 10)
        w.read(key, 10, 10)
    kept = w.windows
    assert len(kept) <= windows.MAX_WINDOWS
    assert sum(n for _, _, n in kept) <= windows.MAX_WINDOW_BYTES


def test_a_short_window_falls_back_to_the_blobs_own_read():
    def read_range(key: str, offset: int, length: int) -> bytes | None:
        return b"x" * 3  # cut short

    w = windows.PackWindows(read_range)
    w.read("packs/a.pack", 0, 10)
    assert w.read("packs/a.pack", 10, 10) is None


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.arange(24, dtype=torch.float32).view(2, 3, 4),
        lambda: torch.arange(24, dtype=torch.int64)[3:15].view(3, 4),
        lambda: torch.arange(24, dtype=torch.float64).view(4, 6).t(),
        lambda: torch.tensor(2.5, dtype=torch.bfloat16),
        lambda: torch.zeros(5, dtype=torch.bool),
        lambda: torch.ones(7, dtype=torch.complex64),
        lambda: torch.ones(3, requires_grad=True),
    ],
)
def test_small_tensor_path_matches_the_general_one(tmp_path, make):
    t = make()
    with tensorcas.ContentStoreWriter(str(tmp_path)) as writer:
        writer.write_tensor("x", t)
        writer.write_tensor("whole", t.detach().clone())
    direct = tensorcas.ContentStoreReader(str(tmp_path)).read_tensor("x")
    general = tensorcas.ContentStoreReader(str(tmp_path), verify=True).read_tensor("x")
    for got in (direct, general):
        assert got.dtype == t.dtype and got.shape == t.shape and got.stride() == t.stride()
        assert got.storage_offset() == t.storage_offset()
        assert got.requires_grad == t.requires_grad and not got._is_view()
        assert torch.equal(got.detach(), t.detach())
        assert got.untyped_storage().nbytes() == t.untyped_storage().nbytes()


def test_tensors_of_one_storage_still_share_it(tmp_path):
    base = torch.arange(32, dtype=torch.float32)
    with tensorcas.ContentStoreWriter(str(tmp_path)) as writer:
        writer.write_tensor("view", base[4:20].view(4, 4))
        writer.write_tensor("base", base)
    reader = tensorcas.ContentStoreReader(str(tmp_path))
    view, whole = reader.read_tensor("view"), reader.read_tensor("base")
    assert view.untyped_storage().data_ptr() == whole.untyped_storage().data_ptr()
    whole[5] = -1.0
    assert view[0, 1] == -1.0


def test_parsed_record_is_the_record():
    line = (
        b'0000000000000000 {"op":"put","t":1,"name":"a","dtype":"float32","shape":[2,3],"stride":[3,1],'
        b'"offset":1,"requires_grad":true,"blob":"blake3:' + b"ab" * 32 + b'","nbytes":40}'
    )
    fast = put_record("a", line)
    expected = TensorRecord("a", "float32", (2, 3), (3, 1), 1, True, "blake3:" + "ab" * 32, 40)
    assert fast == expected and hash(fast) == hash(expected) and repr(fast) == repr(expected)
    made = parsed_record(*(getattr(expected, f) for f in TensorRecord.__slots__))  # type: ignore[attr-defined]
    assert made == expected
    with pytest.raises(AttributeError):
        made.name = "b"  # type: ignore[misc]


def test_small_tensors_read_in_order_from_object_storage_cost_a_few_gets(s3_server, s3_url):
    from s3proxy import FaultProxy
    from tensorcas.store import open_backend

    tensors = _small(4)
    with tensorcas.ContentStoreWriter(open_backend(s3_url, storage_options=s3_server.options())) as writer:
        for name, t in tensors.items():
            writer.write_tensor(name, t)
    with FaultProxy(s3_server.endpoint) as proxy:
        reader = tensorcas.ContentStoreReader(open_backend(s3_url, storage_options=s3_server.options(proxy.endpoint)))
        with proxy._lock:
            proxy.requests.clear()
        for name, t in tensors.items():
            assert torch.equal(reader.read_tensor(name), t)
        with proxy._lock:
            seen = [(method, path) for method, path, _ in proxy.requests]
    # 300 tensors of under 2.4 KB: one GET for the first, then windows of 1 MiB.
    assert len(seen) <= 4 and all(method == "GET" and "/packs/" in path for method, path in seen), seen


def test_a_device_index_without_an_accelerator_is_a_store_error(tmp_path):
    with tensorcas.ContentStoreWriter(str(tmp_path)) as writer:
        writer.write_tensor("a", torch.ones(3))
    reader = tensorcas.ContentStoreReader(str(tmp_path))
    if torch.accelerator.is_available():
        pytest.skip("an accelerator is present: device 0 exists")
    with pytest.raises(tensorcas.StoreError, match="device 0"):
        reader.read_tensor("a", device=0)
    with pytest.raises(tensorcas.StoreError):
        reader.read_storage(reader.read_tensor_metadata("a").blob, device=0)
