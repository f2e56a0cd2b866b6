"""Find where two recorded runs stop agreeing.

Two recordings (``tensorcas.record`` or ``tensorcas.recording_backend``, or any two prefixes of
tensors written by hand) are lined up by name, in the execution order of the first one (its
index; see :mod:`tensorcas.recording.log`), and compared one pair at a time until a pair is
outside tolerance.  That pair is *the first divergence*: everything recorded before it was
still close.  The scan is in order rather than a binary search because closeness is not
monotonic: a normalisation can make a perturbed tensor close again further on.

Tolerances are ``torch.testing.assert_close``'s defaults for the dtype (the looser of the two
sides' dtypes), overridable per dtype or for all: a pair is close when
``|a - b| <= atol + rtol * |b|`` for every element, with NaN equal to NaN.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import format as fmt
from ..errors import RecordingError
from ..reader import ContentStoreReader
from ..recording.log import Entry, read_order
from ._common import Progress, check_walkable, json_number, unravel
from ._walk import iter_chunks, to_wide
from .diff import Target, parse_target

#: ``torch.testing.assert_close``'s default (rtol, atol) per dtype; every other dtype is exact.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
    "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7),
    "complex32": (1e-3, 1e-5),
    "complex64": (1.3e-6, 1e-5),
    "complex128": (1e-7, 1e-7),
}

IDENTICAL = "identical"
CLOSE = "close"
DIFFERENT = "different"


@dataclass
class Comparison:
    """One pair of recorded tensors compared: where it stands in the run and how far apart."""

    position: int  # place in the first recording's execution order (0-based)
    key: str  # the name below each prefix
    kind: str
    step: int
    name_a: str
    name_b: str
    status: str = IDENTICAL
    reason: str = ""
    dtype_a: str = ""
    dtype_b: str = ""
    shape: list[int] = field(default_factory=list)
    rtol: float = 0.0
    atol: float = 0.0
    numel: int = 0
    mismatched: int = 0
    max_abs_error: float = 0.0
    max_abs_index: list[int] | None = None
    max_rel_error: float = 0.0
    max_rel_index: list[int] | None = None
    mean_abs_error: float = 0.0
    first_mismatch_index: list[int] | None = None

    @property
    def ok(self) -> bool:
        return self.status != DIFFERENT

    def to_json(self) -> dict[str, Any]:
        out = dict(vars(self))
        for key in ("max_abs_error", "max_rel_error", "mean_abs_error"):
            out[key] = json_number(out[key])
        return out


@dataclass
class BisectResult:
    """The comparison of two recordings, in the first one's execution order."""

    a: str
    b: str
    loc_a: str
    loc_b: str
    compared: list[Comparison] = field(default_factory=list)
    first: Comparison | None = None
    #: the comparisons just before ``first`` (all still close), oldest first
    before: list[Comparison] = field(default_factory=list)
    #: inputs recorded for the call that produced ``first`` (module inputs, graph inputs)
    inputs: list[Comparison] = field(default_factory=list)
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    total: int = 0  # pairs that could be compared

    @property
    def ok(self) -> bool:
        return self.first is None

    def replay_code(self) -> str:
        """Python that loads the diverging pair with ``load_tensor``, to look at them again."""
        if self.first is None:
            return ""
        lines = ["import torch, tensorcas"]
        for var, loc, name in (
            ("a", self.loc_a, self.first.name_a),
            ("b", self.loc_b, self.first.name_b),
        ):
            lines.append(f"with tensorcas.load_tensor_reader({loc!r}) as reader:")
            lines.append(f"    r = reader.read_tensor_metadata({name!r})")
            lines.append(
                f"    {var} = torch.ops.tensorcas.load_tensor({name!r}, r.shape, r.stride, "
                "dtype=r.torch_dtype, device='cpu')"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "ok": self.ok,
            "compared": len(self.compared),
            "comparable": self.total,
            "first_divergence": None if self.first is None else self.first.to_json(),
            "before": [c.to_json() for c in self.before],
            "inputs": [c.to_json() for c in self.inputs],
            "replay": None
            if self.first is None
            else {
                "a": {"store": self.loc_a, "name": self.first.name_a},
                "b": {"store": self.loc_b, "name": self.first.name_b},
                "python": self.replay_code(),
            },
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
        }


def bisect(
    a: str | Target,
    b: str | Target,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    tolerances: Mapping[str, tuple[float, float]] | None = None,
    context: int = 3,
    compare_all: bool = False,
    progress: Progress | None = None,
) -> BisectResult:
    """Find the first recorded tensor where ``a`` and ``b`` (``STORE:PREFIX``) disagree.

    Args:
        rtol, atol: override the tolerance for every dtype (each on its own).
        tolerances: ``{"bfloat16": (rtol, atol)}`` overrides for single dtypes.
        context: how many of the comparisons before the divergence to keep.
        compare_all: keep comparing after the first divergence (for a plot of the error along the
            whole run); ``first`` is still the first one.
    """
    ta, tb = _target(a), _target(b)
    reader_a = ContentStoreReader(ta.loc, cache=False, mmap=True)
    reader_b = reader_a if ta.loc == tb.loc else ContentStoreReader(tb.loc, cache=False, mmap=True)
    order_a = read_order(reader_a, ta.prefix)
    order_b = read_order(reader_b, tb.prefix)
    for target, order in ((ta, order_a), (tb, order_b)):
        if not order:
            raise RecordingError(
                f"nothing is recorded under {str(target)!r}; 'tensorcas ls {target.loc} {target.prefix}' "
                "lists what is there (is the prefix right?)"
            )
    keys_b = {e.key for e in order_b}
    keys_a = {e.key for e in order_a}
    table = dict(DEFAULT_TOLERANCES)
    table.update(tolerances or {})
    result = BisectResult(str(ta), str(tb), reader_a.location, reader_b.location)
    result.only_in_a = [e.key for e in order_a if e.key not in keys_b]
    result.only_in_b = [e.key for e in order_b if e.key not in keys_a]
    common = [e for e in order_a if e.key in keys_b]
    if not common:
        raise RecordingError(
            f"{ta} and {tb} have no names in common below their prefixes (first names: "
            f"{order_a[0].key!r} and {order_b[0].key!r}); point both at recordings of the same code"
        )
    result.total = len(common)
    pairs = _Pairs(reader_a, reader_b, table, rtol, atol)
    pairs.names_a = {e.key: e.same_as or _full(ta.prefix, e.key) for e in order_a}
    pairs.names_b = {e.key: e.same_as or _full(tb.prefix, e.key) for e in order_b}
    for position, entry in enumerate(common):
        c = pairs.compare(position, entry)
        result.compared.append(c)
        if progress is not None:
            progress(position + 1, len(common))
        if not c.ok and result.first is None:
            result.first = c
            result.before = [x for x in result.compared[-1 - context : -1]] if context else []
            result.inputs = _inputs_of(c, common, pairs)
            if not compare_all:
                break
    return result


def _target(x: str | Target) -> Target:
    return x if isinstance(x, Target) else parse_target(x)


def _full(prefix: str, key: str) -> str:
    if not prefix:
        return key
    return f"{prefix}{key}" if prefix.endswith("/") else f"{prefix}/{key}"


def _inputs_of(c: Comparison, common: list[Entry], pairs: _Pairs) -> list[Comparison]:
    """The recorded inputs of the call that produced ``c``: the ``input*`` names beside it."""
    scope = c.key.rsplit("/", 1)[0] if "/" in c.key else ""
    if c.kind == "op":
        scope = scope.rsplit("/", 1)[0]  # an op's output: the inputs of the module it ran in
    if c.kind == "node":
        scope = scope.rsplit("/", 1)[0]  # a graph node: the graph call's inputs
    out = []
    for position, entry in enumerate(common):
        head, _, leaf = entry.key.rpartition("/")
        if head == scope and leaf.startswith("input"):
            out.append(pairs.compare(position, entry))
    return out


def tolerance_for(
    dtype_a: str,
    dtype_b: str,
    table: Mapping[str, tuple[float, float]],
    rtol: float | None,
    atol: float | None,
) -> tuple[float, float]:
    """The looser of the two dtypes' tolerances, with overrides applied."""
    ra, aa = table.get(dtype_a, (0.0, 0.0))
    rb, ab = table.get(dtype_b, (0.0, 0.0))
    return (max(ra, rb) if rtol is None else rtol, max(aa, ab) if atol is None else atol)


class _Pairs:
    """Compares pairs by the names that hold their bytes; a pair met again (a tensor recorded
    under a second name) reuses the first comparison."""

    def __init__(
        self,
        reader_a: ContentStoreReader,
        reader_b: ContentStoreReader,
        table: Mapping[str, tuple[float, float]],
        rtol: float | None,
        atol: float | None,
    ) -> None:
        self.reader_a, self.reader_b = reader_a, reader_b
        self.table, self.rtol, self.atol = table, rtol, atol
        self.names_a: dict[str, str] = {}
        self.names_b: dict[str, str] = {}
        self._done: dict[tuple[str, str], Comparison] = {}

    def compare(self, position: int, entry: Entry) -> Comparison:
        name_a, name_b = self.names_a[entry.key], self.names_b[entry.key]
        earlier = self._done.get((name_a, name_b))
        if earlier is None:
            earlier = _compare(
                name_a, name_b, self.reader_a, self.reader_b, self.table, self.rtol, self.atol
            )
            self._done[(name_a, name_b)] = earlier
        c = copy.copy(earlier)
        c.position, c.key, c.kind, c.step = position, entry.key, entry.kind, entry.step
        return c


def _compare(
    name_a: str,
    name_b: str,
    reader_a: ContentStoreReader,
    reader_b: ContentStoreReader,
    table: Mapping[str, tuple[float, float]],
    rtol: float | None,
    atol: float | None,
) -> Comparison:
    ra, rb = reader_a.read_tensor_metadata(name_a), reader_b.read_tensor_metadata(name_b)
    c = Comparison(0, "", "", 0, name_a, name_b)
    c.dtype_a, c.dtype_b, c.shape, c.numel = ra.dtype, rb.dtype, list(ra.shape), ra.numel
    c.rtol, c.atol = tolerance_for(ra.dtype, rb.dtype, table, rtol, atol)
    if ra.shape != rb.shape:
        c.status, c.reason = DIFFERENT, f"shape {list(ra.shape)} vs {list(rb.shape)}"
        return c
    if ra.dtype != rb.dtype:
        c.reason = f"dtype {ra.dtype} vs {rb.dtype}"
    if ra.blob == rb.blob and (ra.dtype, ra.stride, ra.offset) == (rb.dtype, rb.stride, rb.offset):
        return c  # the same bytes seen the same way
    check_walkable(ra)
    check_walkable(rb)
    if "float4_e2m1fn_x2" in (ra.dtype, rb.dtype):
        c.status, c.reason = (
            DIFFERENT,
            "float4_e2m1fn_x2 values cannot be compared; their bytes differ",
        )
        return c
    stats = error_stats(
        reader_a.read_tensor(name_a), reader_b.read_tensor(name_b), c.rtol, c.atol, ra
    )
    c.mismatched, c.max_abs_error, c.max_abs_index = (
        stats.mismatched,
        stats.max_abs,
        stats.max_abs_index,
    )
    c.max_rel_error, c.max_rel_index = stats.max_rel, stats.max_rel_index
    c.mean_abs_error, c.first_mismatch_index = stats.mean_abs, stats.first_mismatch_index
    if stats.mismatched:
        c.status = DIFFERENT
    elif stats.max_abs > 0 or ra.dtype != rb.dtype:
        c.status = CLOSE
    return c


@dataclass
class ErrorStats:
    mismatched: int = 0
    max_abs: float = 0.0
    max_abs_index: list[int] | None = None
    max_rel: float = 0.0
    max_rel_index: list[int] | None = None
    mean_abs: float = 0.0
    first_mismatch_index: list[int] | None = None


def error_stats(
    a: torch.Tensor,
    b: torch.Tensor,
    rtol: float,
    atol: float,
    record: fmt.TensorRecord | None = None,
) -> ErrorStats:
    """Element-wise error of ``a`` against ``b``, walked in chunks in float64.

    NaN on both sides is no error; NaN on one side only, or infinities of different signs, are an
    infinite error (always outside tolerance)."""
    shape = tuple(a.shape)
    out = ErrorStats()
    flat = 0
    total = 0.0
    for ca, cb in zip(iter_chunks(a.detach()), iter_chunks(b.detach()), strict=True):
        wa, wb = to_wide(ca), to_wide(cb)
        if wa.is_complex() != wb.is_complex():
            wa, wb = wa.to(torch.complex128), wb.to(torch.complex128)
        err = (wa - wb).abs()
        ref = wb.abs()
        err = torch.where(wa == wb, torch.zeros_like(err), err)
        err = torch.where(wa.isnan() & wb.isnan(), torch.zeros_like(err), err)
        err = torch.where(err.isnan(), torch.full_like(err, math.inf), err)
        rel = torch.where(ref > 0, err / ref, torch.where(err > 0, math.inf, 0.0))
        bad = err > atol + rtol * ref
        n_bad = int(bad.sum())
        if n_bad:
            if out.first_mismatch_index is None:
                out.first_mismatch_index = unravel(flat + int(bad.nonzero()[0, 0]), shape)
            out.mismatched += n_bad
        total += float(err.sum())
        i = int(err.argmax())
        if float(err[i]) > out.max_abs:
            out.max_abs, out.max_abs_index = float(err[i]), unravel(flat + i, shape)
        j = int(rel.argmax())
        if float(rel[j]) > out.max_rel:
            out.max_rel, out.max_rel_index = float(rel[j]), unravel(flat + j, shape)
        flat += ca.numel()
    out.mean_abs = total / flat if flat else 0.0
    return out


def render(result: BisectResult) -> list[str]:
    """The result as lines of text for people."""
    lines = []
    if result.first is None:
        lines.append(
            f"no divergence: {len(result.compared)} recorded tensor(s) of {result.a} and {result.b} "
            "agree within tolerance"
        )
    else:
        f = result.first
        lines.append(
            f"first divergence: {f.key}  ({f.kind}, position {f.position + 1} of {result.total})"
        )
        lines.append(f"  a: {f.name_a}  {f.dtype_a} {f.shape}")
        lines.append(f"  b: {f.name_b}  {f.dtype_b} {f.shape}")
        if f.reason:
            lines.append(f"  {f.reason}")
        if f.numel and f.max_abs_index is not None:
            share = 100.0 * f.mismatched / f.numel
            lines.append(
                f"  {f.mismatched}/{f.numel} elements ({share:.3g}%) outside rtol={f.rtol:g} atol={f.atol:g}, "
                f"first at {f.first_mismatch_index}"
            )
            lines.append(
                f"  max abs err {f.max_abs_error:.4g} at {f.max_abs_index}; max rel err {f.max_rel_error:.4g} "
                f"at {f.max_rel_index}; mean abs err {f.mean_abs_error:.4g}"
            )
        if result.before:
            lines.append("still close just before it:")
            lines.extend(f"  {_brief(c)}" for c in result.before)
        if result.inputs:
            lines.append("inputs of that call:")
            lines.extend(f"  {_brief(c)}" for c in result.inputs)
        lines.append("replay with load_tensor:")
        lines.extend(f"  {line}" for line in result.replay_code().splitlines())
    if result.only_in_a or result.only_in_b:
        lines.append(
            f"not compared: {len(result.only_in_a)} name(s) only in a, {len(result.only_in_b)} only in b"
            + (f" (first: {(result.only_in_a or result.only_in_b)[0]})")
        )
    return lines


def _brief(c: Comparison) -> str:
    text = f"{c.status:<9} {c.key}"
    if c.status != IDENTICAL:
        text += f"  max abs err {c.max_abs_error:.3g}, max rel err {c.max_rel_error:.3g}"
    return text
