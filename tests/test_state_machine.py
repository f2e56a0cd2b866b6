"""A Hypothesis state machine: writers and readers against a dict model, on both backends.

Rules write tensors (new names, overwrites, views that share a storage, repeated content),
delete them, open further writers and close them, and read through long-lived and fresh
readers.  After every step the store must agree with the model: the same names in the order of
their last write, and every tensor bit-exact with its dtype, shape, stride, offset and
``requires_grad``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import tensorcas
from storetools import bits
from tensorcas import ContentStoreReader, ContentStoreWriter, TensorNotFoundError
from tensorcas.backends.memory import MemoryBackend

NAMES = st.sampled_from(["a", "b", "model/w", "model/b", "model/layer.0/w", "x/y/z"])
DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.uint8,
    torch.bool,
    torch.complex64,
]


@dataclass(frozen=True)
class Expected:
    """What the model says a name holds."""

    bits: bytes
    dtype: torch.dtype
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    requires_grad: bool

    @classmethod
    def of(cls, t: torch.Tensor) -> Expected:
        return cls(
            bits(t), t.dtype, tuple(t.shape), t.stride(), t.storage_offset(), t.requires_grad
        )

    def matches(self, t: torch.Tensor) -> bool:
        return Expected.of(t) == self


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    """Small tensors of many dtypes; some are views (slices, transposes) of a larger storage,
    some are large enough to be stored as blobs of their own, and seeds repeat so that content
    repeats."""
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 5))
    size = draw(st.sampled_from([0, 1, 3, 12, 40_000]))
    g = torch.Generator().manual_seed(seed)
    base = (torch.rand(max(size, 1), generator=g) * 100).to(dtype)[:size]
    kind = draw(st.sampled_from(["plain", "slice", "matrix-t", "scalar"]))
    if kind == "slice" and size > 2:
        t = base[1::2]
    elif kind == "matrix-t" and size == 12:
        t = base.view(3, 4).t()
    elif kind == "scalar" and size:
        t = base[size // 2]
    else:
        t = base
    if draw(st.booleans()) and (dtype.is_floating_point or dtype.is_complex):
        t = t.detach().requires_grad_(True)
    return t


class StoreMachine(RuleBasedStateMachine):
    """The model is a dict name -> Expected, kept in the order of each name's last write."""

    backend_kind = "local"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="tensorcas-sm-")
        self.loc: object = (
            MemoryBackend() if self.backend_kind == "memory" else os.path.join(self.tmp, "store")
        )
        self.writers = [ContentStoreWriter(self.loc)]  # type: ignore[arg-type]
        self.reader = ContentStoreReader(self.loc)  # type: ignore[arg-type]
        self.model: dict[str, Expected] = {}

    def teardown(self) -> None:
        for w in self.writers:
            w.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _write(self, i: int, name: str, t: torch.Tensor) -> None:
        writer = self.writers[i % len(self.writers)]
        writer.write_tensor(name, t)
        self.model.pop(name, None)  # a rewrite moves the name to the end of the order
        self.model[name] = Expected.of(t)

    @rule(i=st.integers(0, 3), name=NAMES, t=tensors())
    def write(self, i: int, name: str, t: torch.Tensor) -> None:
        self._write(i, name, t)

    @rule(i=st.integers(0, 3), name=NAMES, other=NAMES, t=tensors())
    def write_two_views_of_one_storage(
        self, i: int, name: str, other: str, t: torch.Tensor
    ) -> None:
        self._write(i, name, t)
        if t.dim() >= 1 and t.numel() > 1:
            self._write(i, other, t[1:])

    @rule(i=st.integers(0, 3), name=NAMES)
    def delete(self, i: int, name: str) -> None:
        writer = self.writers[i % len(self.writers)]
        if name in self.model:
            writer.delete_tensor(name)
            del self.model[name]
        else:
            with pytest.raises(TensorNotFoundError):
                writer.delete_tensor(name)

    @rule()
    def open_another_writer(self) -> None:
        self.writers.append(ContentStoreWriter(self.loc))  # type: ignore[arg-type]

    @precondition(lambda self: len(self.writers) > 1)
    @rule(i=st.integers(0, 3))
    def close_a_writer(self, i: int) -> None:
        self.writers.pop(i % len(self.writers)).close()

    @rule()
    def reopen_the_reader(self) -> None:
        self.reader = ContentStoreReader(self.loc, verify=True)  # type: ignore[arg-type]

    @rule(name=NAMES, fresh=st.booleans())
    def read(self, name: str, fresh: bool) -> None:
        reader = ContentStoreReader(self.loc) if fresh else self.reader  # type: ignore[arg-type]
        reader.list_tensors()  # a long-lived reader sees what was written since: list refreshes
        if name in self.model:
            t = reader.read_tensor(name)
            assert self.model[name].matches(t), name
            meta = reader.read_tensor_metadata(name)
            assert meta.shape == self.model[name].shape and meta.stride == self.model[name].stride
        else:
            with pytest.raises(TensorNotFoundError):
                reader.read_tensor(name)
            assert name not in reader

    @rule(prefix=st.sampled_from(["", "model", "model/", "x", "model/layer.0"]))
    def list_prefix(self, prefix: str) -> None:
        expected = [n for n in self.model if tensorcas.format.name_matches(n, prefix)]
        assert self.reader.list_tensors(prefix) == expected

    @invariant()
    def names_in_write_order(self) -> None:
        assert self.reader.list_tensors() == list(self.model)


class MemoryStoreMachine(StoreMachine):
    backend_kind = "memory"


MACHINE_SETTINGS = settings(
    max_examples=int(os.environ.get("TENSORCAS_SM_EXAMPLES", "40")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestLocalStore = StoreMachine.TestCase
TestLocalStore.settings = MACHINE_SETTINGS
TestMemoryStore = MemoryStoreMachine.TestCase
TestMemoryStore.settings = MACHINE_SETTINGS


def test_final_state_survives_verify_and_a_new_process_view(tmp_path):
    """One fixed run, checked the way the machine cannot: verify and a reader opened afterwards."""
    loc = os.fspath(tmp_path / "store")
    w1, w2 = ContentStoreWriter(loc), ContentStoreWriter(loc)
    x = torch.arange(12.0)
    w1.write_tensor("a", x)
    w2.write_tensor("a", x.view(3, 4).t())
    w1.write_tensor("b", x[::3])
    w2.delete_tensor("b")
    w1.write_tensor("b", x[1:])
    w1.close()
    w2.close()
    reader = ContentStoreReader(loc, verify=True)
    assert reader.list_tensors() == ["a", "b"]
    assert Expected.of(reader.read_tensor("a")) == Expected.of(x.view(3, 4).t())
    assert Expected.of(reader.read_tensor("b")) == Expected.of(x[1:])
    assert tensorcas.verify(loc).ok
