"""The peers, each behind one adapter shape: write tensors to a path, read them back by name.

Every workload times these adapters (or the limits below them: raw ``write()``/``read()`` and the
BLAKE3 library), so that all contenders do the same work on the same tensors.
"""

from __future__ import annotations

import inspect
import os
import time

import blake3
import torch
from torch.utils import _content_store as torch_cs

import tensorcas

from .harness import byte_view

try:
    from safetensors.torch import load_file as st_load_file
    from safetensors.torch import save_file as st_save_file
except ImportError:  # pragma: no cover - safetensors is in the bench extra
    st_load_file = st_save_file = None


class Contender:
    """One way to store named tensors at a path and read them back."""

    name = ""

    def write(self, path: str, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def read(self, path: str, names: list[str]) -> object:
        raise NotImplementedError


class Tensorcas(Contender):
    def __init__(self, *, background: bool = False, verify: bool = False, mmap: bool = False) -> None:
        self.background, self.verify, self.mmap = background, verify, mmap
        self.name = "tensorcas" + ("-bg" if background else "") + ("-verify" if verify else "")

    def write(self, path: str, tensors: dict[str, torch.Tensor]) -> None:
        with tensorcas.ContentStoreWriter(path, background=self.background) as writer:
            for name, tensor in tensors.items():
                writer.write_tensor(name, tensor)

    def read(self, path: str, names: list[str]) -> object:
        reader = tensorcas.ContentStoreReader(path, verify=self.verify, mmap=self.mmap)
        return [reader.read_tensor(n) for n in names]


class TorchContentStore(Contender):
    """PyTorch's own content store (``torch.utils._content_store``)."""

    def __init__(self, *, stable: bool) -> None:
        self.stable = stable
        self.name = "torch-cs-sha1" if stable else "torch-cs-default"

    def write(self, path: str, tensors: dict[str, torch.Tensor]) -> None:
        writer = torch_cs.ContentStoreWriter(path, stable_hash=self.stable)
        for name, tensor in tensors.items():
            writer.write_tensor(name, tensor)

    def read(self, path: str, names: list[str]) -> object:
        reader = torch_cs.ContentStoreReader(path)
        return [reader.read_tensor(n) for n in names]


class TorchSave(Contender):
    name = "torch.save"

    def write(self, path: str, tensors: dict[str, torch.Tensor]) -> None:
        torch.save(tensors, path)

    def read(self, path: str, names: list[str]) -> object:
        return torch.load(path, weights_only=True)


class Safetensors(Contender):
    name = "safetensors"

    def write(self, path: str, tensors: dict[str, torch.Tensor]) -> None:
        st_save_file(tensors, path)

    def read(self, path: str, names: list[str]) -> object:
        # The default load_file maps the file (lazy); its "pread" backend reads it.
        if "backend" in inspect.signature(st_load_file).parameters:
            return st_load_file(path, backend="pread")
        return st_load_file(path)


class RawFiles(Contender):
    """One file per tensor, written and read with plain ``write()``/``readinto()``: the limit."""

    name = "raw"

    def write(self, path: str, tensors: dict[str, torch.Tensor]) -> None:
        raw_write_files(path, {n: byte_view(t) for n, t in tensors.items()})

    def read(self, path: str, names: list[str]) -> object:
        out = {n: bytearray(os.path.getsize(os.path.join(path, n))) for n in names}
        raw_read_files(path, out)
        return out


TENSORCAS = Tensorcas()
TENSORCAS_BG = Tensorcas(background=True)
TORCH_CS_SHA1 = TorchContentStore(stable=True)
TORCH_CS_DEFAULT = TorchContentStore(stable=False)
TORCH_SAVE = TorchSave()
SAFETENSORS = Safetensors() if st_save_file is not None else None


# -- the limits ---------------------------------------------------------------------------------


def raw_write_files(directory: str, views: dict[str, memoryview]) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, view in views.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(view)


def raw_read_files(directory: str, buffers: dict[str, bytearray] | dict[str, memoryview]) -> None:
    for name, buf in buffers.items():
        with open(os.path.join(directory, name), "rb", buffering=0) as f:
            f.readinto(buf)


def blake3_all(views: list[memoryview]) -> None:
    for view in views:
        blake3.blake3(view, max_threads=blake3.blake3.AUTO).digest()


def torch_cs_warmup(sizes: list[int]) -> float:
    """Compile PyTorch's default (non-stable) hash once per size class; returns seconds spent."""
    t0 = time.perf_counter()
    for n in sizes:
        torch_cs.hash_storage(torch.ones(n).untyped_storage())
    return time.perf_counter() - t0
