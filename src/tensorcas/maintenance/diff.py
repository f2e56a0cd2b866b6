"""``diff``: compare tensors of the same name in two stores, or under two prefixes of one store.

The use case is two runs of a model dumped tensor by tensor: which tensors changed, by how much,
and which one changed *first*.  Results therefore follow the writing order of the first side,
and each difference says where its largest error is.

Targets are written ``STORE`` or ``STORE:PREFIX`` (see :func:`parse_target`).  Names are matched
by what follows the prefix, so ``run:step1/`` against ``run:step2/`` pairs ``step1/x`` with
``step2/x``.  Either side may also be what people already have, read in place and never converted:
a safetensors file, or a directory written by PyTorch's ``torch.utils._content_store`` (read as
``tensorcas import`` reads it, with ``torch.load(weights_only=True)``, because the user named it).

Tensors whose blobs and views are the same are identical without reading a byte.  Others are
walked in chunks converted to float64 (complex128), so memory stays bounded.  torch is imported
only when values are compared.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import format as fmt
from ..backends.base import Backend
from ..backends.objectstore import is_url
from ..errors import FormatError
from ..store import Location, Store
from ._common import (
    Progress,
    check_walkable,
    check_walkable_tensor,
    json_number,
    open_store,
    unravel,
)

if TYPE_CHECKING:
    import torch

IDENTICAL = "identical"
CLOSE = "close"
DIFFERENT = "different"
ONLY_A = "only-in-a"
ONLY_B = "only-in-b"


@dataclass(frozen=True)
class Target:
    """One side of a diff: a store and the prefix its names are taken under."""

    loc: Location
    prefix: str = ""

    def __str__(self) -> str:
        where = self.loc.location if isinstance(self.loc, Backend) else os.fspath(self.loc)
        return f"{where}:{self.prefix}" if self.prefix else where


def parse_target(spec: str) -> Target:
    """``STORE`` or ``STORE:PREFIX``.

    If the whole of ``spec`` names an existing directory or file (or is ``memory://``), it is the
    store; otherwise it is split at its last ``:`` into the store and the prefix.  So ``runs/a``
    and ``runs/a:model/`` both name the store ``runs/a``, and a store whose path holds a ``:`` can
    still be named (``weird:dir:`` is that directory with an empty prefix).
    """
    rest = spec.partition("://")[2] if is_url(spec) else spec
    if spec == "memory://" or os.path.exists(spec) or ":" not in rest:
        return Target(spec, "")
    loc, _, prefix = spec.rpartition(":")
    fmt.validate_prefix(prefix)
    return Target(loc, prefix)


@dataclass
class TensorDiff:
    """The comparison of one pair of tensors (or one tensor present on one side only)."""

    key: str  # the name below the prefix, shared by both sides
    status: str  # identical, close, different, only-in-a, only-in-b
    name_a: str | None = None
    name_b: str | None = None
    reason: str = ""
    numel: int = 0
    mismatched: int = 0  # elements outside the tolerance
    max_abs_error: float = 0.0
    max_abs_index: list[int] | None = None
    max_rel_error: float = 0.0
    max_rel_index: list[int] | None = None
    first_mismatch_index: list[int] | None = None

    @property
    def ok(self) -> bool:
        return self.status in (IDENTICAL, CLOSE)

    def to_json(self) -> dict[str, Any]:
        out = dict(vars(self))
        for key in ("max_abs_error", "max_rel_error"):
            out[key] = json_number(out[key])
        return out


@dataclass
class DiffResult:
    """Every pair compared, in the first side's writing order, then names only the second has."""

    a: str
    b: str
    rtol: float
    atol: float
    entries: list[TensorDiff] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every tensor has a partner that is identical or within tolerance."""
        return all(e.ok for e in self.entries)

    @property
    def first_difference(self) -> TensorDiff | None:
        return next((e for e in self.entries if not e.ok), None)

    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e.status == status)

    def to_json(self) -> dict[str, Any]:
        first = self.first_difference
        return {
            "a": self.a,
            "b": self.b,
            "rtol": self.rtol,
            "atol": self.atol,
            "ok": self.ok,
            "counts": {s: self.count(s) for s in (IDENTICAL, CLOSE, DIFFERENT, ONLY_A, ONLY_B)},
            "first_difference": None if first is None else first.key,
            "entries": [e.to_json() for e in self.entries],
        }


def diff(
    a: str | Target | Location,
    b: str | Target | Location,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    equal_nan: bool = True,
    progress: Progress | None = None,
) -> DiffResult:
    """Compare the tensors of ``a`` and ``b`` (strings are parsed by :func:`parse_target`).

    Each side is a tensorcas store, a safetensors file or a PyTorch content-store directory.
    A pair is *identical* when dtype, shape and every value agree (NaN equals NaN when
    ``equal_nan``), *close* when shapes agree and every element satisfies
    ``|a - b| <= atol + rtol * |b|`` as in ``torch.allclose`` (dtypes may differ; the reason says
    so), and *different* otherwise.  Read-only.
    """
    ta, tb = _as_target(a), _as_target(b)
    side_a = _open_side(ta, None)
    side_b = _open_side(tb, side_a if ta.loc == tb.loc else None)

    result = DiffResult(str(ta), str(tb), rtol, atol)
    total = len(side_a.items) + sum(1 for k in side_b.items if k not in side_a.items)
    for i, (key, ia) in enumerate(side_a.items.items()):
        ib = side_b.items.get(key)
        if ib is None:
            result.entries.append(TensorDiff(key, ONLY_A, name_a=ia.name, numel=ia.numel))
        else:
            result.entries.append(_compare(key, ia, ib, side_a, side_b, rtol, atol, equal_nan))
        if progress is not None:
            progress(i + 1, total)
    for key, ib in side_b.items.items():
        if key not in side_a.items:
            result.entries.append(TensorDiff(key, ONLY_B, name_b=ib.name, numel=ib.numel))
    return result


@dataclass(frozen=True)
class _Item:
    """One tensor of a side, described without reading its values."""

    name: str
    dtype: str  # tensorcas's dtype name (safetensors' own code if it has none)
    shape: tuple[int, ...]
    record: fmt.TensorRecord | None = None  # tensorcas stores only

    @property
    def numel(self) -> int:
        return _numel(self.shape)


@dataclass
class _Side:
    """The tensors of one target, keyed by their name below the prefix, and how to load one."""

    items: dict[str, _Item]
    load: Callable[[_Item], torch.Tensor]
    store: Store | None = None


def _open_side(target: Target, same: _Side | None) -> _Side:
    loc = target.loc
    if isinstance(loc, Store | Backend) or os.fspath(loc) == "memory://":
        return _store_side(target, same)
    path = os.fspath(loc)
    if os.path.isfile(path):
        return _safetensors_side(path, target.prefix)
    if _is_torch_content_store(path):
        return _torch_store_side(path, target.prefix)
    return _store_side(target, same)


def _is_torch_content_store(path: str) -> bool:
    """A directory PyTorch's content store wrote: ``tensors/`` or ``storages/``, no marker."""
    return (
        os.path.isdir(path)
        and not os.path.exists(os.path.join(path, fmt.META_KEY))
        and any(os.path.isdir(os.path.join(path, d)) for d in ("tensors", "storages"))
    )


def _store_side(target: Target, same: _Side | None) -> _Side:
    store = same.store if same is not None and same.store is not None else None
    if store is None:
        store = open_store(target.loc, read_only=True)
    items = {
        _key(r.name, target.prefix): _Item(r.name, r.dtype, r.shape, r)
        for r in store.records(target.prefix)
    }
    reader = None

    def load(item: _Item) -> torch.Tensor:
        nonlocal reader
        if reader is None:
            from ..reader import ContentStoreReader

            reader = ContentStoreReader(store.backend, cache=False, mmap=True)
        return reader.read_tensor(item.name).detach()

    return _Side(items, load, store)


#: safetensors' dtype codes, as tensorcas names its dtypes.
_SAFETENSORS_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "I32": "int32",
    "U32": "uint32",
    "I64": "int64",
    "U64": "uint64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
}


def _safetensors_side(path: str, prefix: str) -> _Side:
    """A safetensors file, read in place (each tensor is loaded when it is compared)."""
    from safetensors import SafetensorError, safe_open

    def bad(exc: Exception) -> FormatError:
        return FormatError(
            f"{path} is a file but not a readable safetensors file ({exc}); diff compares tensorcas "
            "stores, safetensors files and directories written by torch.utils._content_store"
        )

    try:
        handle = safe_open(path, framework="pt")
        items: dict[str, _Item] = {}
        for name in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            if not fmt.name_matches(name, prefix):
                continue
            piece = handle.get_slice(name)
            dtype = piece.get_dtype()
            items[_key(name, prefix)] = _Item(
                name, _SAFETENSORS_DTYPES.get(dtype, dtype.lower()), tuple(piece.get_shape())
            )
    except (SafetensorError, OSError, ValueError) as exc:
        raise bad(exc) from None

    def load(item: _Item) -> torch.Tensor:
        try:
            return handle.get_tensor(item.name)
        except (SafetensorError, OSError, ValueError) as exc:
            raise bad(exc) from None

    return _Side(items, load)


def _torch_store_side(path: str, prefix: str) -> _Side:
    """A directory written by ``torch.utils._content_store``: its metadata files are read with
    ``torch.load(weights_only=True)`` (as ``tensorcas import`` does), each view checked against
    its storage's size before torch sees it."""
    from . import transfer

    src = os.path.abspath(path)
    metas: dict[str, Any] = {}
    items: dict[str, _Item] = {}
    for name, file in transfer.torch_store_files(src):
        if not fmt.name_matches(name, prefix):
            continue
        meta = transfer._load_metadata(file)
        dtype = fmt.dtype_name(meta[0]) or str(meta[0])
        items[_key(name, prefix)] = _Item(name, dtype, meta[3])
        metas[name] = (file, meta)

    def load(item: _Item) -> torch.Tensor:
        file, meta = metas[item.name]
        storage = transfer._load_storage(src, meta[1], file)
        return transfer.torch_store_view(file, meta, storage)

    return _Side(items, load)


def _as_target(x: str | Target | Location) -> Target:
    if isinstance(x, Target):
        return x
    if isinstance(x, str):
        return parse_target(x)
    return Target(x, "")


def _key(name: str, prefix: str) -> str:
    rest = name[len(prefix) :]
    return rest[1:] if not prefix.endswith("/") and rest.startswith("/") else rest


def _compare(
    key: str,
    ia: _Item,
    ib: _Item,
    side_a: _Side,
    side_b: _Side,
    rtol: float,
    atol: float,
    equal_nan: bool,
) -> TensorDiff:
    out = TensorDiff(key, IDENTICAL, name_a=ia.name, name_b=ib.name, numel=ia.numel)
    if ia.shape != ib.shape:
        out.status = DIFFERENT
        out.reason = f"shape {list(ia.shape)} vs {list(ib.shape)}"
        return out
    ra, rb = ia.record, ib.record
    if ra is not None and rb is not None:
        same_view = (ra.dtype, ra.stride, ra.offset) == (rb.dtype, rb.stride, rb.offset)
        if ra.blob == rb.blob and same_view:
            return out  # the same bytes seen the same way
    for record in (ra, rb):
        if record is not None:
            check_walkable(record)
    if "float4_e2m1fn_x2" in (ia.dtype, ib.dtype):
        out.status = DIFFERENT
        out.reason = "float4_e2m1fn_x2 values cannot be compared; their bytes differ"
        return out
    if ia.dtype != ib.dtype:
        out.reason = f"dtype {ia.dtype} vs {ib.dtype}"
    tensor_a = side_a.load(ia)
    tensor_b = side_b.load(ib)
    for tensor, item in ((tensor_a, ia), (tensor_b, ib)):
        if item.record is None:
            check_walkable_tensor(item.name, tensor)
    _compare_values(
        out,
        tensor_a,
        tensor_b,
        exact=ia.dtype == ib.dtype,
        rtol=rtol,
        atol=atol,
        equal_nan=equal_nan,
    )
    return out


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _compare_values(
    out: TensorDiff,
    tensor_a: torch.Tensor,
    tensor_b: torch.Tensor,
    *,
    exact: bool,
    rtol: float,
    atol: float,
    equal_nan: bool,
) -> None:
    import torch

    from ._walk import iter_chunks, to_wide

    shape = tuple(tensor_a.shape)
    flat = 0
    for ca, cb in zip(iter_chunks(tensor_a), iter_chunks(tensor_b), strict=True):
        wa, wb = to_wide(ca), to_wide(cb)
        if wa.is_complex() != wb.is_complex():
            wa, wb = wa.to(torch.complex128), wb.to(torch.complex128)
        both_nan = wa.isnan() & wb.isnan()
        if exact:
            equal = (
                (ca == cb) | both_nan
                if ca.dtype.is_floating_point or ca.dtype.is_complex
                else ca == cb
            )
            if not equal.all():
                exact = False
        err = (wa - wb).abs()
        ref = wb.abs()
        # Equal values (infinities of one sign included) have no error; NaN on one side only is
        # an infinite error, so it always counts and always wins the "largest" below.
        err = torch.where(wa == wb, torch.zeros_like(err), err)
        err = torch.where(
            both_nan, torch.zeros_like(err) if equal_nan else torch.full_like(err, math.inf), err
        )
        err = torch.where(err.isnan(), torch.full_like(err, math.inf), err)
        rel = torch.where(ref > 0, err / ref, torch.where(err > 0, math.inf, 0.0))
        bad = err > atol + rtol * ref
        n_bad = int(bad.sum())
        if n_bad:
            if out.first_mismatch_index is None:
                out.first_mismatch_index = unravel(flat + int(bad.nonzero()[0, 0]), shape)
            out.mismatched += n_bad
        i = int(err.argmax())
        if float(err[i]) > out.max_abs_error:
            out.max_abs_error = float(err[i])
            out.max_abs_index = unravel(flat + i, shape)
        j = int(rel.argmax())
        if float(rel[j]) > out.max_rel_error:
            out.max_rel_error = float(rel[j])
            out.max_rel_index = unravel(flat + j, shape)
        flat += ca.numel()
    if exact:
        out.status = IDENTICAL
    elif out.mismatched:
        out.status = DIFFERENT
    else:
        out.status = CLOSE
