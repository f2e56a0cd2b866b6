"""``diff``: compare tensors of the same name in two stores, or under two prefixes of one store.

The use case is two runs of a model dumped tensor by tensor: which tensors changed, by how much,
and which one changed *first*.  Results therefore follow the writing order of the first side,
and each difference says where its largest error is.

Targets are written ``STORE`` or ``STORE:PREFIX`` (see :func:`parse_target`).  Names are matched
by what follows the prefix, so ``run:step1/`` against ``run:step2/`` pairs ``step1/x`` with
``step2/x``.

Tensors whose blobs and views are the same are identical without reading a byte.  Others are
walked in chunks converted to float64 (complex128), so memory stays bounded.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import format as fmt
from ..backends.base import Backend
from ..backends.objectstore import is_url
from ..reader import ContentStoreReader
from ..store import Location
from ._common import Progress, check_walkable, iter_chunks, open_store, to_wide, unravel

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

    If the whole of ``spec`` names an existing directory (or is ``memory://``), it is the store;
    otherwise it is split at its last ``:`` into the store and the prefix.  So ``runs/a`` and
    ``runs/a:model/`` both name the store ``runs/a``, and a store whose path holds a ``:`` can
    still be named (``weird:dir:`` is that directory with an empty prefix).
    """
    rest = spec.partition("://")[2] if is_url(spec) else spec
    if spec == "memory://" or os.path.isdir(spec) or ":" not in rest:
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
            value = out[key]
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = "nan" if math.isnan(value) else "inf"
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

    A pair is *identical* when dtype, shape and every value agree (NaN equals NaN when
    ``equal_nan``), *close* when shapes agree and every element satisfies
    ``|a - b| <= atol + rtol * |b|`` as in ``torch.allclose`` (dtypes may differ; the reason says
    so), and *different* otherwise.  Read-only.
    """
    ta, tb = _as_target(a), _as_target(b)
    store_a = open_store(ta.loc, read_only=True)
    store_b = store_a if ta.loc == tb.loc else open_store(tb.loc, read_only=True)
    reader_a = ContentStoreReader(store_a.backend, cache=False, mmap=True)
    reader_b = ContentStoreReader(store_b.backend, cache=False, mmap=True)
    side_a = {_key(r.name, ta.prefix): r for r in store_a.records(ta.prefix)}
    side_b = {_key(r.name, tb.prefix): r for r in store_b.records(tb.prefix)}

    result = DiffResult(str(ta), str(tb), rtol, atol)
    total = len(side_a) + sum(1 for k in side_b if k not in side_a)
    for i, (key, ra) in enumerate(side_a.items()):
        rb = side_b.get(key)
        if rb is None:
            result.entries.append(TensorDiff(key, ONLY_A, name_a=ra.name, numel=ra.numel))
        else:
            result.entries.append(_compare(key, ra, rb, reader_a, reader_b, rtol, atol, equal_nan))
        if progress is not None:
            progress(i + 1, total)
    for key, rb in side_b.items():
        if key not in side_a:
            result.entries.append(TensorDiff(key, ONLY_B, name_b=rb.name, numel=rb.numel))
    return result


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
    ra: fmt.TensorRecord,
    rb: fmt.TensorRecord,
    reader_a: ContentStoreReader,
    reader_b: ContentStoreReader,
    rtol: float,
    atol: float,
    equal_nan: bool,
) -> TensorDiff:
    out = TensorDiff(key, IDENTICAL, name_a=ra.name, name_b=rb.name, numel=ra.numel)
    if ra.shape != rb.shape:
        out.status = DIFFERENT
        out.reason = f"shape {list(ra.shape)} vs {list(rb.shape)}"
        return out
    same_view = (ra.dtype, ra.stride, ra.offset) == (rb.dtype, rb.stride, rb.offset)
    if ra.blob == rb.blob and same_view:
        return out  # the same bytes seen the same way
    check_walkable(ra)
    check_walkable(rb)
    if "float4_e2m1fn_x2" in (ra.dtype, rb.dtype):
        out.status = DIFFERENT
        out.reason = "float4_e2m1fn_x2 values cannot be compared; their bytes differ"
        return out
    if ra.dtype != rb.dtype:
        out.reason = f"dtype {ra.dtype} vs {rb.dtype}"
    tensor_a = reader_a.read_tensor(ra.name).detach()
    tensor_b = reader_b.read_tensor(rb.name).detach()
    exact = ra.dtype == rb.dtype
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
                out.first_mismatch_index = unravel(flat + int(bad.nonzero()[0, 0]), ra.shape)
            out.mismatched += n_bad
        i = int(err.argmax())
        if float(err[i]) > out.max_abs_error:
            out.max_abs_error = float(err[i])
            out.max_abs_index = unravel(flat + i, ra.shape)
        j = int(rel.argmax())
        if float(rel[j]) > out.max_rel_error:
            out.max_rel_error = float(rel[j])
            out.max_rel_index = unravel(flat + j, ra.shape)
        flat += ca.numel()
    if exact:
        out.status = IDENTICAL
    elif out.mismatched:
        out.status = DIFFERENT
    else:
        out.status = CLOSE
    return out
