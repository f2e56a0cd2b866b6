"""The ``torch.ops.tensorcas.load_tensor`` operator and the reader context it loads from.

Inside ``with load_tensor_reader(loc):`` the operator loads the named tensor from that store (a new
storage each call, so results never alias one another) and converts it to the dtype asked for.
Outside any context it returns random data of the requested size and stride, so a graph that
replays a dump still runs where the dump is absent.  It has a fake implementation, so FakeTensorMode
and torch.compile tracing see only metadata.

The current reader is kept in a ``ContextVar``: contexts nest (the innermost wins), and each thread
(or asyncio task) has its own, so one thread's context never leaks into another.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from .errors import ReaderContextError
from .store import Location

if TYPE_CHECKING:
    # Imported when a context is opened: this module is imported right after torch itself (see
    # ``_torch_hook``), possibly while the reader module is still being imported.
    from .reader import ContentStoreReader

_current: contextvars.ContextVar[ContentStoreReader | None] = contextvars.ContextVar(
    "tensorcas_load_tensor_reader", default=None
)


@contextmanager
def load_tensor_reader(loc: Location, *, verify: bool = False) -> Iterator[ContentStoreReader]:
    """Make ``torch.ops.tensorcas.load_tensor`` read from the store at ``loc`` in this block."""
    from .reader import ContentStoreReader

    reader = ContentStoreReader(loc, cache=False, verify=verify)
    token = _current.set(reader)
    try:
        yield reader
    finally:
        _current.reset(token)


def current_reader() -> ContentStoreReader | None:
    return _current.get()


@torch.library.custom_op("tensorcas::load_tensor", mutates_args=())
def load_tensor(
    name: str, size: Sequence[int], stride: Sequence[int], *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Load tensor ``name`` from the current reader context, or random data outside one."""
    size, stride, device = tuple(size), tuple(stride), torch.device(device)
    reader = _current.get()
    if reader is None:
        return _random_strided(size, stride, dtype, device)
    tensor = reader.read_tensor(name, device=device)
    if tuple(tensor.shape) != size or tuple(tensor.stride()) != stride:
        raise ReaderContextError(
            f"load_tensor({name!r}): the store holds size {tuple(tensor.shape)} and stride "
            f"{tuple(tensor.stride())}, but size {size} and stride {stride} were asked for; "
            "regenerate the graph from this store or pass the stored size and stride"
        )
    if not _same_device(tensor.device, device):
        raise ReaderContextError(f"load_tensor({name!r}): loaded onto {tensor.device}, {device} was asked for")
    tensor = tensor.detach()
    if tensor.dtype != dtype or tensor.storage_offset() != 0:
        # The fake implementation promises storage offset 0 (compilers such as Inductor rely on
        # the alignment that implies), so a view into its blob is copied out.
        tensor = _rebase(tensor, dtype)
    return tensor


@load_tensor.register_fake
def _(name: str, size: Sequence[int], stride: Sequence[int], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.empty_strided(tuple(size), tuple(stride), dtype=dtype, device=device)


def _same_device(actual: torch.device, wanted: torch.device) -> bool:
    if actual.type != wanted.type:
        return False
    return wanted.index is None or actual.index == wanted.index


def _rebase(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A copy of ``tensor`` in ``dtype`` with the same size and stride, at storage offset 0.

    Copies (and converts) the span of storage the view covers and lays the same view over the
    result, because copying into an ``empty_strided`` target fails when the strides overlap (an
    expanded tensor).
    """
    size, stride = tuple(tensor.shape), tuple(tensor.stride())
    if tensor.numel() == 0:
        return torch.empty_strided(size, stride, dtype=dtype, device=tensor.device)
    span = 1 + sum((s - 1) * st for s, st in zip(size, stride))
    flat = tensor.as_strided((span,), (1,), tensor.storage_offset())
    return flat.to(dtype, copy=True).as_strided(size, stride)


def _random_strided(size: tuple[int, ...], stride: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Random values laid out exactly as ``size``/``stride`` say (overlapping strides included)."""
    if any(s == 0 for s in size):
        return torch.empty_strided(size, stride, dtype=dtype, device=device)
    numel = 1 + sum((s - 1) * st for s, st in zip(size, stride))
    if dtype == torch.bool:
        base = torch.randint(0, 2, (numel,), device=device).bool()
    elif dtype.is_floating_point or dtype.is_complex:
        try:
            base = torch.randn(numel, dtype=dtype, device=device)
        except (RuntimeError, TypeError):  # float8 and friends have no normal kernel
            try:
                base = torch.randn(numel, device=device).to(dtype)
            except (RuntimeError, TypeError):  # float4_e2m1fn_x2 has no kernels at all: random bytes
                nbytes = numel * dtype.itemsize
                base = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device).view(dtype)
    else:
        info = torch.iinfo(dtype)
        base = torch.randint(max(info.min, -128), min(info.max, 127) + 1, (numel,), device=device).to(dtype)
    return base.as_strided(size, stride)
