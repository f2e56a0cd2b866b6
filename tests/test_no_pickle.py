"""Reading a store never unpickles anything.

Every way pickle could be reached (``pickle.loads``, ``pickle.load``, ``pickle.Unpickler``, the C
unpickler, ``torch.load``) is replaced by a tripwire while a store is opened, listed, read and
verified.  A store from a stranger must be safe to open because no code from it can run.
"""

from __future__ import annotations

import _pickle
import pickle

import pytest
import torch

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter, load_tensor_reader


class PickleUsed(AssertionError):
    pass


def _tripwire(*args, **kwargs):
    raise PickleUsed("something tried to unpickle while reading a store")


class _TrippingUnpickler:
    def __init__(self, *args, **kwargs) -> None:
        raise PickleUsed("pickle.Unpickler was constructed while reading a store")


@pytest.fixture
def store(loc):
    base = torch.randn(4, 5)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("model/weight", torch.nn.Parameter(base))
        writer.write_tensor("model/weight_t", base.t())
        writer.write_tensor("ints", torch.arange(10, dtype=torch.int64))
        writer.write_tensor("scalar", torch.tensor(1.5, dtype=torch.bfloat16))
        writer.write_tensor("big", torch.ones(100_000))
        writer.write_tensor("deleted", torch.zeros(1))
        writer.delete_tensor("deleted")
    return loc, base


@pytest.fixture
def no_pickle(monkeypatch):
    monkeypatch.setattr(pickle, "loads", _tripwire)
    monkeypatch.setattr(pickle, "load", _tripwire)
    monkeypatch.setattr(pickle, "Unpickler", _TrippingUnpickler)
    monkeypatch.setattr(_pickle, "loads", _tripwire)
    monkeypatch.setattr(_pickle, "load", _tripwire)
    monkeypatch.setattr(_pickle, "Unpickler", _TrippingUnpickler)
    monkeypatch.setattr(torch, "load", _tripwire)
    monkeypatch.setattr(torch.serialization, "load", _tripwire)


def test_tripwires_work(no_pickle):
    with pytest.raises(PickleUsed):
        pickle.loads(pickle.dumps(1))
    with pytest.raises(PickleUsed):
        torch.load("anything")


@pytest.mark.parametrize("mmap", [False, True])
def test_reading_a_store_never_unpickles(store, no_pickle, mmap):
    loc, base = store
    reader = ContentStoreReader(loc, mmap=mmap)
    assert reader.list_tensors() == ["model/weight", "model/weight_t", "ints", "scalar", "big"]
    assert reader.list_tensors("model") == ["model/weight", "model/weight_t"]
    weight = reader.read_tensor("model/weight")
    assert weight.requires_grad and torch.equal(weight.detach(), base)
    assert torch.equal(reader.read_tensor("model/weight_t"), base.t())
    assert torch.equal(reader.read_tensor("ints"), torch.arange(10))
    assert reader.read_tensor("scalar").item() == 1.5
    assert torch.equal(reader.read_tensor("big"), torch.ones(100_000))
    record = reader.read_tensor_metadata("ints")
    assert record.dtype == "int64"
    assert bytes(reader.read_storage(record.blob)) == bytes(torch.arange(10).untyped_storage())
    with pytest.raises(tensorcas.TensorNotFoundError):
        reader.read_tensor("deleted")
    verified = ContentStoreReader(loc, verify=True)
    assert torch.equal(verified.read_tensor("ints"), torch.arange(10))
    report = tensorcas.verify(loc)
    assert report.ok and report.records_checked >= 5


def test_load_tensor_never_unpickles(store, no_pickle):
    loc, base = store
    with load_tensor_reader(loc):
        got = torch.ops.tensorcas.load_tensor.default(
            "model/weight_t", (5, 4), (1, 5), dtype=torch.float32, device="cpu"
        )
    assert torch.equal(got, base.t())
