"""The element walk behind ``show``: statistics and a histogram in bounded memory.

A large view whose pieces lie close together in its blob (any contiguous tensor, and most others)
is read a piece at a time straight from the blob, each piece once per pass, so memory stays at a
few pieces whatever the tensor's size and nothing stays mapped.  Other views (a transpose, whose
every row spans the whole blob) are memory-mapped and walked piece by piece instead.  The first
pass gathers the statistics, the second the histogram (whose bins need the range).

Floating-point pieces without NaN or infinities (the usual case, found by one ``aminmax``) use
torch's own reductions, which accumulate in double precision on the CPU; anything else goes through
a float64 (complex128) copy of the piece with explicit masks.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator

import torch

from .. import format as fmt
from ..errors import CorruptObjectError
from ..store import Store
from ._common import CHUNK_ELEMENTS, Progress
from ._walk import iter_chunks, to_wide

#: Blobs up to this size are simply read whole (one read, bounded by this size).
WHOLE_READ_BYTES = 64 << 20

#: A piece is read straight from the blob when the bytes it spans are at most this many times its
#: own; otherwise (a transposed view) the blob is memory-mapped instead.
MAX_SPAN_RATIO = 4

#: Dtypes whose reductions torch runs natively (float16/bfloat16 pieces are widened to float32).
_NATIVE_FLOATS = (torch.float32, torch.float64)
_HALF_FLOATS = (torch.float16, torch.bfloat16)

Pieces = Callable[[], Iterator[torch.Tensor]]


def element_pieces(store: Store, record: fmt.TensorRecord) -> Pieces:
    """A function that yields the view's elements in row-major order as 1-D pieces of at most
    about ``CHUNK_ELEMENTS`` elements; each call walks the tensor again from the start."""
    if record.numel == 0:
        return lambda: iter(())
    digest = record.blob
    loose = store.backend.stat(fmt.blob_key(digest)) is not None
    first = next(_pieces(record.offset, record.shape, record.stride, CHUNK_ELEMENTS))
    spread = _span(first[1], first[2]) > MAX_SPAN_RATIO * max(math.prod(first[1]), 1)
    if record.nbytes <= WHOLE_READ_BYTES or not loose or spread:
        from ..reader import ContentStoreReader

        mmap = record.nbytes > WHOLE_READ_BYTES
        tensor = ContentStoreReader(store.backend, cache=False, mmap=mmap).read_tensor(record.name)
        tensor = tensor.detach()
        return lambda: iter_chunks(tensor)
    store.check_blob(digest, record.nbytes, name=record.name)
    dtype = fmt.torch_dtype(record.dtype)
    size = fmt.itemsize(record.dtype)
    key = fmt.blob_key(digest)

    def walk() -> Iterator[torch.Tensor]:
        for offset, shape, stride in _pieces(
            record.offset, record.shape, record.stride, CHUNK_ELEMENTS
        ):
            span = _span(shape, stride)
            data = store.backend.read_range(key, offset * size, span * size)
            if data is None or len(data) != span * size:
                raise CorruptObjectError(
                    f"tensor {record.name!r}: its blob {digest} was cut short or removed while "
                    f"being read; run 'tensorcas verify {store.location}'"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a read-only buffer: the piece is never written
                raw = torch.frombuffer(data, dtype=torch.uint8)
            yield raw.view(dtype).as_strided(shape, stride, 0).reshape(-1)

    return walk


def _pieces(
    offset: int, shape: tuple[int, ...], stride: tuple[int, ...], max_elements: int
) -> Iterator[tuple[int, tuple[int, ...], tuple[int, ...]]]:
    """``(offset, shape, stride)`` of row-major pieces of a view, cut as ``iter_chunks`` cuts."""
    numel = math.prod(shape)
    if not shape or numel <= max_elements:
        yield offset, shape, stride
        return
    if len(shape) == 1:
        for start in range(0, shape[0], max_elements):
            yield offset + start * stride[0], (min(max_elements, shape[0] - start),), stride
        return
    per_row = numel // shape[0]
    step = max_elements // per_row
    if step == 0:
        for i in range(shape[0]):
            yield from _pieces(offset + i * stride[0], shape[1:], stride[1:], max_elements)
        return
    for start in range(0, shape[0], step):
        yield offset + start * stride[0], (min(step, shape[0] - start), *shape[1:]), stride


def _span(shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """Elements of the blob a non-empty view spans, from its first element to its last."""
    return 1 + sum((s - 1) * st for s, st in zip(shape, stride, strict=True))


class Walk:
    """Statistics of the elements, accumulated piece by piece (Chan et al.'s pairwise update)."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.exact = not (dtype.is_floating_point or dtype.is_complex)
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.lo: float | int | None = None
        self.hi: float | int | None = None
        self.finite = 0
        self.nan = 0
        self.posinf = 0
        self.neginf = 0
        self.zeros = 0

    def add(self, chunk: torch.Tensor) -> None:
        if chunk.dtype in _HALF_FLOATS:
            chunk = chunk.float()
        if chunk.dtype in _NATIVE_FLOATS:
            lo_t, hi_t = torch.aminmax(chunk)
            lo, hi = float(lo_t), float(hi_t)
            if math.isfinite(lo) and math.isfinite(hi):  # no NaN (it propagates), no infinity
                n = chunk.numel()
                # The mean from a double-precision sum; the spread from torch's variance (in the
                # piece's precision, ample for a standard deviation shown to six digits).
                mean = float(chunk.sum(dtype=torch.float64)) / n
                var = float(torch.var(chunk, correction=0))
                self.zeros += n - int(torch.count_nonzero(chunk))
                self.finite += n
                self._combine(n, mean, var * n, lo, hi)
                return
        self._add_wide(chunk)

    def _add_wide(self, chunk: torch.Tensor) -> None:
        wide = to_wide(chunk)
        self.zeros += int((wide == 0).sum())
        c_lo: float | int
        c_hi: float | int
        if self.exact:
            finite = wide
            c_lo, c_hi = _exact_min_max(chunk)
        else:
            nan = wide.isnan()
            inf = wide.isinf()
            self.nan += int(nan.sum())
            if wide.is_complex():
                self.posinf += int(inf.sum())
            else:
                self.posinf += int((wide == math.inf).sum())
                self.neginf += int((wide == -math.inf).sum())
            finite = wide[~(nan | inf)]
            if wide.is_complex():
                finite = finite.abs()
            if finite.numel() == 0:
                return
            c_lo, c_hi = float(finite.min()), float(finite.max())
        n = finite.numel()
        self.finite += n
        c_mean = float(finite.mean())
        self._combine(n, c_mean, float(((finite - c_mean) ** 2).sum()), c_lo, c_hi)

    def _combine(
        self, n: int, c_mean: float, c_m2: float, lo: float | int, hi: float | int
    ) -> None:
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)
        delta = c_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.m2 += c_m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0


def _exact_min_max(chunk: torch.Tensor) -> tuple[int, int]:
    if chunk.dtype == torch.bool:
        return int(bool(chunk.all())), int(bool(chunk.any()))
    try:
        return int(chunk.min()), int(chunk.max())
    except (RuntimeError, NotImplementedError):  # unsigned types without min/max kernels
        values = chunk.tolist()
        return min(values), max(values)


def histogram_counts(
    pieces: Pieces, lo: float, hi: float, bins: int, advance: Callable[[int], None]
) -> list[int]:
    """Counts of the finite values (magnitudes for complex) in ``bins`` equal bins over [lo, hi]."""
    counts = torch.zeros(bins, dtype=torch.float64)
    for chunk in pieces():
        if chunk.dtype in _HALF_FLOATS:
            values = chunk.float()
        elif chunk.dtype in _NATIVE_FLOATS:
            values = chunk  # histc ignores NaN and values outside [lo, hi], infinities included
        else:
            wide = to_wide(chunk)
            values = wide[wide.isfinite()]
            if values.is_complex():
                values = values.abs()
        counts += torch.histc(values, bins=bins, min=lo, max=hi).to(torch.float64)
        advance(chunk.numel())
    return [int(c) for c in counts.tolist()]


def first_values(chunk: torch.Tensor, n: int) -> list[object]:
    piece = chunk[:n]
    if piece.dtype.is_complex:
        return [complex(z) for z in piece.to(torch.complex128).tolist()]
    if piece.dtype.is_floating_point:
        return list(piece.to(torch.float64).tolist())
    return list(piece.tolist())


def progress_counter(progress: Progress | None, total: int) -> Callable[[int], None]:
    """A callback that adds elements done and reports them to ``progress``."""
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    return advance
