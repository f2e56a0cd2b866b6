"""Small pieces the maintenance functions share: opening a store, refusing views too large to
walk, and turning records into JSON-ready dictionaries.  Nothing here imports torch (``ls``, ``du``,
``gc`` and ``verify`` never need it); walking a tensor's elements is in ``_walk``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import format as fmt
from ..errors import StoreError
from ..store import Location, Store

if TYPE_CHECKING:
    import torch

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
    check_expansion(record.name, record.numel, record.nbytes, fmt.itemsize(record.dtype))


def check_walkable_tensor(name: str, tensor: torch.Tensor) -> None:
    """:func:`check_walkable` for a tensor read from another format (a view of its storage)."""
    storage_nbytes = tensor.untyped_storage().nbytes()
    check_expansion(name, tensor.numel(), storage_nbytes, tensor.element_size())


def check_expansion(name: str, numel: int, nbytes: int, itemsize: int) -> None:
    blob_elements = max(1, nbytes // max(itemsize, 1))
    if numel > MIN_REFUSED_ELEMENTS and numel > MAX_EXPANSION * blob_elements:
        raise StoreError(
            f"tensor {name!r} has {numel} elements over a blob of {nbytes} bytes "
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


def json_number(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value
