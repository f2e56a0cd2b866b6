"""Streaming writes: a chunk is written before the next one replaces it in a reused buffer."""

from __future__ import annotations

import os

import pytest
import torch

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas.blobs import STREAM_CHUNK
from tensorcas.hashing import cpu_storage_view
from tensorcas.store import Store


def reused_buffer_chunks(data: torch.Tensor, chunk: int):
    """Chunks the way device storages are copied to the host: one buffer, overwritten each time."""
    source = cpu_storage_view(data.untyped_storage())
    host = torch.empty(chunk, dtype=torch.uint8)
    view = cpu_storage_view(host.untyped_storage())
    for start in range(0, source.nbytes, chunk):
        end = min(start + chunk, source.nbytes)
        view[: end - start] = source[start:end]
        yield view[: end - start]


def test_streamed_blob_holds_exactly_the_hashed_bytes(loc):
    data = torch.randn(5 * STREAM_CHUNK // 4 + 123)  # several pieces per chunk, a short last one
    store = Store.open(loc, create=True)
    for _ in range(5):
        digest, _ = store.blobs.put_streaming(lambda: reused_buffer_chunks(data, 2 * STREAM_CHUNK + 4096), data.nbytes)
        assert digest == tensorcas.hash_storage(data.untyped_storage())
        assert tensorcas.verify(loc).ok
        data.add_(1)


def test_large_reads_land_in_ordinary_storages(tmp_path):
    """Read targets given huge-page advice are still torch's own storages: resizable and
    shareable between processes, and bit-exact."""
    from tensorcas._memory import HUGE_THRESHOLD

    loc = str(tmp_path / "store")
    x = torch.randn(HUGE_THRESHOLD // 4 + 12345)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", x)
    y = ContentStoreReader(loc).read_tensor("x")
    assert torch.equal(x, y)
    y.share_memory_()
    assert y.is_shared() and torch.equal(x, y)
    z = ContentStoreReader(loc).read_tensor("x")
    z.untyped_storage().resize_(8)
    assert z.untyped_storage().nbytes() == 8


def test_huge_page_span_covers_whole_aligned_huge_pages():
    from tensorcas._memory import huge_page_span

    two = 2 << 20
    assert huge_page_span(two, 4 * two) == (two, 4 * two)
    assert huge_page_span(two + 64, 4 * two) == (2 * two, 3 * two)
    assert huge_page_span(two + 64, two) is None  # no whole huge page inside
    start, length = huge_page_span(12345, 3 * two + 5000)  # type: ignore[misc]
    assert start % two == 0 and start >= 12345 and start + length <= 12345 + 3 * two + 5000


@pytest.mark.skipif(
    not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"), reason="no transparent huge pages"
)
def test_large_read_targets_are_advised_huge_pages(tmp_path):
    """The kernel records the advice on the mapping (``hg`` in smaps' VmFlags)."""
    loc = str(tmp_path / "store")
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.ones(4 << 20))
    y = ContentStoreReader(loc).read_tensor("x")
    address = y.data_ptr() + (4 << 20)
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    flags = None
    inside = False
    for line in lines:
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "VmFlags:":
            flags = line.split()[1:]
            break
    assert flags is not None and "hg" in flags


def test_new_large_storages_are_written_while_hashed_unless_mostly_stored(tmp_path, monkeypatch):
    """New large bytes are written while they are hashed; once most large storages of a writer
    turn out to be stored already (an unchanged checkpoint under new names), it hashes first and
    skips their writes."""
    import tensorcas.blobs.layer as layer
    from tensorcas.hashing import OVERLAP_THRESHOLD

    streamed: list[int] = []
    real = layer.hash_while_writing

    def counting(chunks, write, nbytes):
        streamed.append(nbytes)
        return real(chunks, write, nbytes)

    monkeypatch.setattr(layer, "hash_while_writing", counting)
    loc = str(tmp_path / "store")
    n = OVERLAP_THRESHOLD // 4 + 1000
    weights = [torch.full((n,), float(i)) for i in range(4)]
    with ContentStoreWriter(loc) as writer:
        for i, w in enumerate(weights):
            writer.write_tensor(f"ckpt1/w{i}", w)
    assert len(streamed) == 4  # all new: each written while hashed
    streamed.clear()
    with ContentStoreWriter(loc) as writer:
        for i, w in enumerate(weights):
            writer.write_tensor(f"ckpt2/w{i}", w.clone())  # same bytes, new names and storages
    assert len(streamed) == 1  # the first is written and discarded; the rest are hashed first
    reader = ContentStoreReader(loc, verify=True)
    for i, w in enumerate(weights):
        assert torch.equal(reader.read_tensor(f"ckpt2/w{i}"), w)


def test_a_forked_child_writes_large_new_storages(tmp_path):
    """The hashing thread of a parent does not exist in a forked child: the child's large writes
    (hashed while written) must not wait for it."""
    import multiprocessing

    from tensorcas.hashing import OVERLAP_THRESHOLD

    loc = str(tmp_path / "store")
    with ContentStoreWriter(loc) as writer:  # the parent's hashing thread is started here
        writer.write_tensor("parent", torch.randn(OVERLAP_THRESHOLD // 4 + 1000))
    child = multiprocessing.get_context("fork").Process(target=_write_in_child, args=(loc,))
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0
    assert ContentStoreReader(loc, verify=True).read_tensor("child").numel() == OVERLAP_THRESHOLD // 4 + 7


def _write_in_child(loc: str) -> None:
    from tensorcas.hashing import OVERLAP_THRESHOLD

    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("child", torch.randn(OVERLAP_THRESHOLD // 4 + 7))


def test_verified_reads_hash_each_piece_as_it_arrives(tmp_path, monkeypatch):
    """A verified read of a large local blob hands every piece to the hashing thread as soon as
    it is read; a blob damaged in its last piece is still refused."""
    import tensorcas.blobs.layer as layer
    from tensorcas.backends.local import READ_PIECE
    from tensorcas.errors import CorruptObjectError

    fed: list[int] = []
    real = layer.PieceHasher

    class Counting(real):  # type: ignore[misc, valid-type]
        def feed(self, piece: memoryview) -> None:
            fed.append(piece.nbytes)
            super().feed(piece)

    monkeypatch.setattr(layer, "PieceHasher", Counting)
    loc = str(tmp_path / "store")
    x = torch.randn((2 * READ_PIECE + 12345) // 4)
    with ContentStoreWriter(loc) as writer:
        record = writer.write_tensor("x", x)
    assert torch.equal(ContentStoreReader(loc, verify=True).read_tensor("x"), x)
    assert len(fed) == 3 and sum(fed) == x.nbytes
    path = Store.open(loc).blobs.local_path(record.blob)
    os.chmod(path, 0o644)  # blobs are read-only files: make this one writable to damage it
    with open(path, "r+b") as f:
        f.seek(x.nbytes - 1)
        last = f.read(1)
        f.seek(x.nbytes - 1)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(CorruptObjectError, match="hash"):
        ContentStoreReader(loc, verify=True).read_tensor("x")
    y = ContentStoreReader(loc).read_tensor("x")  # unverified: the size is right
    assert not torch.equal(x, y)


def test_a_failed_verified_read_waits_for_the_hashing_thread(tmp_path, monkeypatch):
    """A read that fails half way raises its error only after the hashing thread let go of
    the piece it was hashing (the buffer is freed as the error propagates)."""
    import tensorcas.backends.local as local
    import tensorcas.blobs.layer as layer
    from tensorcas.errors import StoreIOError

    loc = str(tmp_path / "store")
    x = torch.randn((3 * local.READ_PIECE) // 4)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", x)
    finished: list[int] = []
    real = layer.PieceHasher

    class Watching(real):  # type: ignore[misc, valid-type]
        def finish(self) -> str:
            digest = super().finish()
            finished.append(self.nbytes)
            return digest

    monkeypatch.setattr(layer, "PieceHasher", Watching)
    calls = []
    real_readv = os.readv

    def failing_readv(fd, buffers):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        return real_readv(fd, buffers)

    monkeypatch.setattr(local.os, "readv", failing_readv)
    with pytest.raises((StoreIOError, OSError)):
        ContentStoreReader(loc, verify=True).read_tensor("x")
    assert finished == [local.READ_PIECE]


def test_storing_a_new_blob_looks_at_its_key_once_before_putting_it(tmp_path, monkeypatch):
    """A new blob costs one look at its key before the put (one HEAD on object storage) and one
    after its record (the check that a concurrent gc left it); an unchanged one the same two."""
    from tensorcas.backends.local import LocalBackend

    looks: list[str] = []
    real_stat = LocalBackend.stat
    monkeypatch.setattr(
        LocalBackend, "stat", lambda self, key: looks.append(key) or real_stat(self, key)
    )
    loc = str(tmp_path / "store")
    x = torch.randn(1 << 17)  # 512 KiB: hashed first, then put
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("warmup", torch.zeros(3))
        looks.clear()
        record = writer.write_tensor("x", x)
        tail = record.blob.split(":")[1][2:]  # blobs/<2 hex>/<the rest>
        assert len([k for k in looks if tail in k]) == 2, looks
        looks.clear()
        writer.write_tensor("x_again", x)
        assert len([k for k in looks if tail in k]) == 2, looks
