"""Small pieces the maintenance functions share: opening a store, walking a tensor in bounded
chunks, and turning records into JSON-ready dictionaries."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from .. import format as fmt
from ..errors import StoreError
from ..store import Location, Store

#: Elements per chunk when a whole tensor is walked (statistics, comparison): bounds the memory of
#: the float64 copies to a few tens of MiB whatever the tensor's size.
CHUNK_ELEMENTS = 1 << 21

#: ``progress(done, total)``: called as work advances; ``total`` is ``None`` when not known.
Progress = Callable[[int, "int | None"], None]


def open_store(loc: Location | Store, *, read_only: bool) -> Store:
    """``loc`` as an opened store (a ``Store`` is used as is)."""
    if isinstance(loc, Store):
        return loc
    return Store.open(loc, read_only=read_only)


#: Tools that look at every element refuse views this much larger than their blob's elements
#: (and above a floor), which only a hostile or absurd record has: walking them would not end.
MAX_EXPANSION = 64
MIN_REFUSED_ELEMENTS = 1 << 31


def check_walkable(record: fmt.TensorRecord) -> None:
    """Raise :class:`StoreError` for a view too expanded to walk element by element."""
    blob_elements = max(1, record.nbytes // fmt.itemsize(record.dtype))
    if record.numel > MIN_REFUSED_ELEMENTS and record.numel > MAX_EXPANSION * blob_elements:
        raise StoreError(
            f"tensor {record.name!r} has {record.numel} elements over a blob of {record.nbytes} bytes "
            f"(an expanded view); it is too large to walk element by element. Read it with "
            f"ContentStoreReader and look at a slice"
        )


def record_to_json(record: fmt.TensorRecord) -> dict[str, Any]:
    """The fields of a record that scripts rely on, plus its logical size in bytes."""
    return {
        "name": record.name,
        "dtype": record.dtype,
        "shape": list(record.shape),
        "stride": list(record.stride),
        "offset": record.offset,
        "requires_grad": record.requires_grad,
        "blob": record.blob,
        "blob_nbytes": record.nbytes,
        "nbytes": record.view_nbytes,
    }


def iter_chunks(tensor: torch.Tensor, max_elements: int = CHUNK_ELEMENTS) -> Iterator[torch.Tensor]:
    """The elements of ``tensor`` in row-major order, as 1-D pieces of at most ``max_elements``
    (unless one innermost row is longer).

    Pieces are cut along leading dimensions, so a non-contiguous view is copied a piece at a time
    instead of whole; two tensors of one shape are cut at the same places, which lets callers
    compare them piece by piece.
    """
    if tensor.dim() == 0:
        yield tensor.reshape(1)
        return
    numel = tensor.numel()
    if numel == 0:
        return
    if numel <= max_elements:
        yield tensor.reshape(-1)
        return
    if tensor.dim() == 1:
        for start in range(0, numel, max_elements):
            yield tensor[start : start + max_elements]
        return
    per_row = numel // tensor.shape[0]
    step = max_elements // per_row
    if step == 0:  # one row is already too large: walk each row on its own
        for row in tensor:
            yield from iter_chunks(row, max_elements)
        return
    for start in range(0, tensor.shape[0], step):
        yield tensor[start : start + step].reshape(-1)


def to_wide(chunk: torch.Tensor) -> torch.Tensor:
    """A chunk as float64 (complex128 for complex dtypes), for exact-enough arithmetic."""
    if chunk.dtype.is_complex:
        return chunk.to(torch.complex128)
    return chunk.to(torch.float64)


def unravel(flat: int, shape: tuple[int, ...]) -> list[int]:
    """The multi-dimensional index of the ``flat``-th element in row-major order."""
    index = []
    for size in reversed(shape):
        index.append(flat % size if size else 0)
        flat = flat // size if size else 0
    return list(reversed(index))


def format_nbytes(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``: sizes for people."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
