"""``show``: one tensor's record, statistics, a histogram and (optionally) its first values.

Meant for looking inside debugging dumps: is this activation all zeros, where did the NaNs come
from, how wide is the range.  The tensor is walked in chunks converted to float64 (complex128 for
complex dtypes), so memory stays bounded whatever its size, and its blob is memory-mapped where the
store is local, so only the bytes looked at are read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import format as fmt
from ..reader import ContentStoreReader
from ..store import Location, Store
from ._common import check_walkable, iter_chunks, open_store, record_to_json, to_wide

#: Dtypes torch cannot convert to float64 element by element (packed sub-byte formats).
_NO_ARITHMETIC = frozenset({"float4_e2m1fn_x2"})


@dataclass
class Histogram:
    """Counts of finite values in ``len(counts)`` equal bins from ``edges[0]`` to ``edges[-1]``."""

    edges: list[float]
    counts: list[int]

    def lines(self, width: int = 40) -> list[str]:
        """The histogram as text, one line per bin: its range, a bar and its count."""
        top = max(self.counts, default=0) or 1
        out = []
        for i, count in enumerate(self.counts):
            bar = "#" * round(width * count / top) if count else ""
            out.append(
                f"[{self.edges[i]:>12.5g}, {self.edges[i + 1]:>12.5g}{']' if i == len(self.counts) - 1 else ')'} {bar:<{width}} {count}"
            )
        return out


@dataclass
class TensorStats:
    """Statistics of a tensor's elements.

    ``min``, ``max``, ``mean`` and ``std`` (with Bessel's correction, as ``torch.std``) are over the
    finite elements only; NaN and infinities are counted instead.  For complex tensors they
    describe the magnitudes ``|z|``; for bool tensors ``mean`` is the fraction that is true.
    Integer ``min`` and ``max`` are exact.
    """

    numel: int
    finite: int = 0
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    zeros: int = 0
    min: float | int | None = None
    max: float | int | None = None
    mean: float | None = None
    std: float | None = None
    of: str = "values"  # or "magnitudes" (complex)

    @property
    def inf(self) -> int:
        return self.posinf + self.neginf


@dataclass
class TensorSummary:
    """What ``show`` found about one tensor."""

    location: str
    record: fmt.TensorRecord
    stats: TensorStats | None
    histogram: Histogram | None = None
    values: list[Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        stats = None
        if self.stats is not None:
            stats = {k: _json_number(v) for k, v in vars(self.stats).items()}
            stats["inf"] = self.stats.inf
        return {
            "location": self.location,
            "record": record_to_json(self.record),
            "stats": stats,
            "histogram": None
            if self.histogram is None
            else {
                "edges": [_json_number(e) for e in self.histogram.edges],
                "counts": self.histogram.counts,
            },
            "values": None if self.values is None else [_json_value(v) for v in self.values],
            "notes": self.notes,
        }


def show(loc: Location | Store, name: str, *, values: int = 0, bins: int = 10) -> TensorSummary:
    """Summarise the tensor ``name``: its record, :class:`TensorStats`, a histogram of ``bins``
    bins, and its first ``values`` elements in row-major order.  Read-only."""
    store = open_store(loc, read_only=True)
    record = store.get_record(name)
    check_walkable(record)
    reader = ContentStoreReader(store.backend, cache=False, mmap=True)
    tensor = reader.read_tensor(name).detach()
    summary = TensorSummary(store.location, record, None)
    if record.dtype in _NO_ARITHMETIC:
        summary.notes.append(
            f"{record.dtype} is a packed format torch cannot convert; no statistics or values"
        )
        return summary
    summary.stats = _stats(tensor)
    if bins > 0 and record.dtype != "bool":
        summary.histogram = _histogram(tensor, summary.stats, bins)
    if values > 0:
        summary.values = _first_values(tensor, values)
    if record.requires_grad:
        summary.notes.append("stored with requires_grad=True")
    return summary


def _stats(tensor: torch.Tensor) -> TensorStats:
    stats = TensorStats(
        numel=tensor.numel(), of="magnitudes" if tensor.dtype.is_complex else "values"
    )
    exact = not (tensor.dtype.is_floating_point or tensor.dtype.is_complex)
    count, mean, m2 = 0, 0.0, 0.0
    c_lo: float | int
    c_hi: float | int
    lo: float | int | None = None
    hi: float | int | None = None
    for chunk in iter_chunks(tensor):
        wide = to_wide(chunk)
        stats.zeros += int((wide == 0).sum())
        if exact:
            finite = wide
            stats.finite += wide.numel()
            c_lo, c_hi = _exact_min_max(chunk)
        else:
            nan = wide.isnan()
            inf = wide.isinf()
            stats.nan += int(nan.sum())
            if wide.is_complex():
                stats.posinf += int(inf.sum())
            else:
                stats.posinf += int((wide == math.inf).sum())
                stats.neginf += int((wide == -math.inf).sum())
            finite = wide[~(nan | inf)]
            if wide.is_complex():
                finite = finite.abs()
            stats.finite += finite.numel()
            if finite.numel() == 0:
                continue
            c_lo, c_hi = float(finite.min()), float(finite.max())
        lo = c_lo if lo is None else min(lo, c_lo)
        hi = c_hi if hi is None else max(hi, c_hi)
        # Chan et al.'s pairwise update: combine this chunk's mean and squared deviations.
        n = finite.numel()
        c_mean = float(finite.mean())
        c_m2 = float(((finite - c_mean) ** 2).sum())
        delta = c_mean - mean
        total = count + n
        mean += delta * n / total
        m2 += c_m2 + delta * delta * count * n / total
        count = total
    if count:
        stats.min, stats.max, stats.mean = lo, hi, mean
        stats.std = math.sqrt(m2 / (count - 1)) if count > 1 else 0.0
    return stats


def _exact_min_max(chunk: torch.Tensor) -> tuple[int, int]:
    if chunk.dtype == torch.bool:
        return int(bool(chunk.all())), int(bool(chunk.any()))
    try:
        return int(chunk.min()), int(chunk.max())
    except (RuntimeError, NotImplementedError):  # unsigned types without min/max kernels
        values = chunk.tolist()
        return min(values), max(values)


def _histogram(tensor: torch.Tensor, stats: TensorStats, bins: int) -> Histogram | None:
    if stats.min is None or stats.max is None:
        return None
    lo, hi = float(stats.min), float(stats.max)
    if lo == hi:
        return Histogram([lo, hi], [stats.finite])
    counts = torch.zeros(bins, dtype=torch.float64)
    for chunk in iter_chunks(tensor):
        wide = to_wide(chunk)
        finite = wide[wide.isfinite()]
        if finite.is_complex():
            finite = finite.abs()
        counts += torch.histc(finite, bins=bins, min=lo, max=hi)
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    return Histogram(edges, [int(c) for c in counts.tolist()])


def _first_values(tensor: torch.Tensor, n: int) -> list[Any]:
    out: list[Any] = []
    for chunk in iter_chunks(tensor, max_elements=max(n, 1)):
        piece = chunk[: n - len(out)]
        if piece.dtype.is_complex:
            out.extend(complex(z) for z in piece.to(torch.complex128).tolist())
        elif piece.dtype.is_floating_point:
            out.extend(piece.to(torch.float64).tolist())
        else:
            out.extend(piece.tolist())
        if len(out) >= n:
            break
    return out


def _json_number(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, complex):
        return [_json_number(value.real), _json_number(value.imag)]
    return _json_number(value)
