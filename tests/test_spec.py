"""The behaviour PyTorch's own content-store test requires, in our words."""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter, hash_storage, load_tensor_reader


def same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return StorageWeakRef(a.untyped_storage()) == StorageWeakRef(b.untyped_storage())


def test_views_and_untracked_mutations_round_trip(loc):
    x = torch.randn(4)
    y = torch.randn(6)
    z = x.view(2, 2)
    writer = ContentStoreWriter(loc)
    writer.write_tensor("x", x)
    writer.write_tensor("y", y)
    writer.write_tensor("z", z)
    x.data.add_(1)  # the version counter does not see this
    writer.write_tensor("x2", x)
    writer.write_tensor("y2", y)
    writer.write_tensor("z2", z)
    del writer

    reader = ContentStoreReader(loc)
    n_x, n_y, n_z = (reader.read_tensor(n) for n in ("x", "y", "z"))
    assert torch.equal(n_x + 1, x)
    assert torch.equal(n_y, y)
    assert torch.equal(n_z + 1, z)
    assert same_storage(n_x, n_z)
    n_x2, n_y2, n_z2 = (reader.read_tensor(n) for n in ("x2", "y2", "z2"))
    assert torch.equal(n_x2, x) and torch.equal(n_y2, y) and torch.equal(n_z2, z)
    assert same_storage(n_y2, n_y)
    assert not same_storage(n_x2, n_x)


def test_hash_of_zero_dim_and_repeated_hash_never_compiles():
    import torch._dynamo

    with torch._dynamo.config.patch(recompile_limit=1):
        digests = {hash_storage(torch.tensor(2).untyped_storage()) for _ in range(4)}
    assert len(digests) == 1


def test_load_tensor_in_reader_context(loc):
    x = torch.randn(4)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", x)
    op = torch.ops.tensorcas.load_tensor.default
    with load_tensor_reader(loc):
        x2 = op("x", (4,), (1,), dtype=torch.float32, device="cpu")
        x3 = op("x", (4,), (1,), dtype=torch.float32, device="cpu")
        assert torch.equal(x2, x) and torch.equal(x3, x)
        assert not same_storage(x, x2)
        assert not same_storage(x2, x3)
        with FakeTensorMode():
            x4 = op("x", (4,), (1,), dtype=torch.float32, device="cpu")
            assert isinstance(x4, FakeTensor)
            assert (x4.shape, x4.stride(), x4.dtype, x4.device) == (x.shape, x.stride(), x.dtype, x.device)
        x5 = op("x", (4,), (1,), dtype=torch.float64, device="cpu")
        assert x5.dtype == torch.float64
        assert torch.equal(x5.float(), x)
    x6 = op("x", (4,), (1,), dtype=torch.float32, device="cpu")
    assert (x6.shape, x6.stride(), x6.dtype) == (x.shape, x.stride(), x.dtype)


def test_verify_finds_a_flipped_byte(loc):
    with ContentStoreWriter(loc) as writer:
        record = writer.write_tensor("w", torch.arange(100_000.0))  # big enough for a file of its own
    assert tensorcas.verify(loc).ok
    path = writer.store.blobs.local_path(record.blob)
    import os

    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"\x01")
    report = tensorcas.verify(loc)
    assert not report.ok
    assert report.findings[0].names == ("w",)
