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
        digest = store.blobs.put_streaming(lambda: reused_buffer_chunks(data, 2 * STREAM_CHUNK + 4096), data.nbytes)
        assert digest == tensorcas.hash_storage(data.untyped_storage())
        assert tensorcas.verify(loc).ok
        data.add_(1)


def test_large_reads_land_in_ordinary_storages(tmp_path):
    """Read targets advised to use huge pages are still torch's own storages: resizable and
    shareable between processes, and bit-exact."""
    from tensorcas._memory import HUGE_PAGE_THRESHOLD

    loc = str(tmp_path / "store")
    x = torch.randn(HUGE_PAGE_THRESHOLD // 4 + 12345)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", x)
    y = ContentStoreReader(loc).read_tensor("x")
    assert torch.equal(x, y)
    y.share_memory_()
    assert y.is_shared() and torch.equal(x, y)
    z = ContentStoreReader(loc).read_tensor("x")
    z.untyped_storage().resize_(8)
    assert z.untyped_storage().nbytes() == 8
