"""``show``: one tensor's record, statistics, a histogram and (optionally) its first values.

Meant for looking inside debugging dumps: is this activation all zeros, where did the NaNs come
from, how wide is the range.  The tensor is walked in pieces of about two million elements, read
straight from its blob (see ``_stats``), so memory stays bounded whatever its size; a ``progress``
callback follows the walk.  torch is imported only when values are looked at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import format as fmt
from ..store import Location, Store
from ._common import Progress, check_walkable, json_number, open_store, record_to_json

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
            stats = {k: json_number(v) for k, v in vars(self.stats).items()}
            stats["inf"] = self.stats.inf
        return {
            "location": self.location,
            "record": record_to_json(self.record),
            "stats": stats,
            "histogram": None
            if self.histogram is None
            else {
                "edges": [json_number(e) for e in self.histogram.edges],
                "counts": self.histogram.counts,
            },
            "values": None if self.values is None else [_json_value(v) for v in self.values],
            "notes": self.notes,
        }


def show(
    loc: Location | Store,
    name: str,
    *,
    values: int = 0,
    bins: int = 10,
    progress: Progress | None = None,
) -> TensorSummary:
    """Summarise the tensor ``name``: its record, :class:`TensorStats`, a histogram of ``bins``
    bins, and its first ``values`` elements in row-major order.  Read-only.

    ``progress(done, total)`` is called as elements are walked (twice over when a histogram is
    made: once for the statistics, once for the bins).
    """
    store = open_store(loc, read_only=True)
    record = store.get_record(name)
    check_walkable(record)
    summary = TensorSummary(store.location, record, None)
    if record.dtype in _NO_ARITHMETIC:
        summary.notes.append(
            f"{record.dtype} is a packed format torch cannot convert; no statistics or values"
        )
        return summary
    from . import _stats

    pieces = _stats.element_pieces(store, record)
    histogram = bins > 0 and record.dtype != "bool"
    advance = _stats.progress_counter(progress, record.numel * (2 if histogram else 1))
    walk = _stats.Walk(fmt.torch_dtype(record.dtype))
    first: list[Any] = []
    for chunk in pieces():
        if len(first) < values:
            first.extend(_stats.first_values(chunk, values - len(first)))
        walk.add(chunk)
        advance(chunk.numel())
    stats = TensorStats(
        numel=record.numel,
        finite=walk.finite,
        nan=walk.nan,
        posinf=walk.posinf,
        neginf=walk.neginf,
        zeros=walk.zeros,
        of="magnitudes" if fmt.torch_dtype(record.dtype).is_complex else "values",
    )
    if walk.count:
        stats.min, stats.max, stats.mean, stats.std = walk.lo, walk.hi, walk.mean, walk.std
    summary.stats = stats
    if histogram and stats.min is not None and stats.max is not None:
        lo, hi = float(stats.min), float(stats.max)
        if lo == hi:
            summary.histogram = Histogram([lo, hi], [stats.finite])
        else:
            counts = _stats.histogram_counts(pieces, lo, hi, bins, advance)
            summary.histogram = Histogram(
                [lo + (hi - lo) * i / bins for i in range(bins + 1)], counts
            )
    if values > 0:
        summary.values = first
    if record.requires_grad:
        summary.notes.append("stored with requires_grad=True")
    return summary


def _json_value(value: Any) -> Any:
    if isinstance(value, complex):
        return [json_number(value.real), json_number(value.imag)]
    return json_number(value)
