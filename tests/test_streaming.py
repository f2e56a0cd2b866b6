"""Streaming writes: a chunk is written before the next one replaces it in a reused buffer."""

from __future__ import annotations

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
    """Read targets populated in one step are still torch's own storages: resizable and
    shareable between processes, and bit-exact."""
    from tensorcas._memory import POPULATE_THRESHOLD

    loc = str(tmp_path / "store")
    x = torch.randn(POPULATE_THRESHOLD // 4 + 12345)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", x)
    y = ContentStoreReader(loc).read_tensor("x")
    assert torch.equal(x, y)
    y.share_memory_()
    assert y.is_shared() and torch.equal(x, y)
    z = ContentStoreReader(loc).read_tensor("x")
    z.untyped_storage().resize_(8)
    assert z.untyped_storage().nbytes() == 8


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
