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
import os
from collections.abc import Callable, Iterator

import torch

from .. import format as fmt
from ..errors import CorruptObjectError
from ..hashing import cpu_storage_view
from ..store import Store
from ._common import CHUNK_ELEMENTS, Progress
from ._walk import iter_chunks, to_wide

#: Blobs up to this size are simply read whole (one read, bounded by this size).
WHOLE_READ_BYTES = 64 << 20

#: Bytes of elements per piece.  Large pieces keep torch's reductions efficient (each call is one
#: parallel region, and many small ones are slow when the cores are busy); the float64 copies
#: that non-finite, integer and complex pieces need are made ``CHUNK_ELEMENTS`` at a time.
PIECE_BYTES = 32 << 20

#: A piece is read straight from the blob when the bytes it spans are at most this many times its
#: own; otherwise (a transposed view) the blob is memory-mapped instead.
MAX_SPAN_RATIO = 2

#: Dtypes whose reductions torch runs natively (float16/bfloat16 pieces are widened to float32).
_NATIVE_FLOATS = (torch.float32, torch.float64)
_HALF_FLOATS = (torch.float16, torch.bfloat16)

Pieces = Callable[[], Iterator[torch.Tensor]]


def element_pieces(store: Store, record: fmt.TensorRecord) -> Pieces:
    """A function that yields the view's elements in row-major order as 1-D pieces of about
    ``PIECE_BYTES``; each call walks the tensor again from the start.  A piece is valid until the
    next one is asked for (streamed pieces share one buffer)."""
    if record.numel == 0:
        return lambda: iter(())
    size = fmt.itemsize(record.dtype)
    per_piece = max(1, PIECE_BYTES // size)
    digest = record.blob
    path = store.blobs.local_path(digest)
    first = next(_pieces(record.offset, record.shape, record.stride, per_piece))
    spread = _span(first[1], first[2]) > MAX_SPAN_RATIO * max(math.prod(first[1]), 1)
    if record.nbytes <= WHOLE_READ_BYTES or path is None or spread:
        from ..reader import ContentStoreReader

        mmap = record.nbytes > WHOLE_READ_BYTES
        tensor = ContentStoreReader(store.backend, cache=False, mmap=mmap).read_tensor(record.name)
        tensor = tensor.detach()
        return lambda: iter_chunks(tensor, per_piece)
    store.blobs.check_size(digest, record.nbytes, name=record.name)
    dtype = fmt.torch_dtype(record.dtype)

    def damaged() -> CorruptObjectError:
        return CorruptObjectError(
            f"tensor {record.name!r}: its blob {digest} was cut short or removed while being "
            f"read; run 'tensorcas verify {store.location}'"
        )

    def walk() -> Iterator[torch.Tensor]:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except OSError:
            raise damaged() from None
        try:
            buffer: torch.Tensor | None = None
            for offset, shape, stride in _pieces(
                record.offset, record.shape, record.stride, per_piece
            ):
                nbytes = _span(shape, stride) * size
                if buffer is None or buffer.numel() < nbytes:
                    buffer = torch.empty(nbytes, dtype=torch.uint8)
                view = cpu_storage_view(buffer.untyped_storage())[:nbytes]
                done = 0
                while done < nbytes:
                    got = os.preadv(fd, [view[done:]], offset * size + done)
                    if got <= 0:
                        raise damaged()
                    done += got
                yield buffer[:nbytes].view(dtype).as_strided(shape, stride, 0).reshape(-1)
        finally:
            os.close(fd)

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
                # torch's whole-tensor reductions (var accumulates in double precision; the sum
                # behind the mean is pairwise): the results are rounded to the piece's precision,
                # ample for six digits.  (var_mean, one call, takes a slower general path.)
                mean = float(chunk.mean())
                var = float(chunk.var(correction=0))
                self.zeros += n - int(torch.count_nonzero(chunk))
                self.finite += n
                self._combine(n, mean, var * n, lo, hi)
                return
        for start in range(0, chunk.numel(), CHUNK_ELEMENTS):
            self._add_wide(chunk[start : start + CHUNK_ELEMENTS])

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
        if chunk.dtype in _HALF_FLOATS + _NATIVE_FLOATS:
            # histc ignores NaN and values outside [lo, hi], infinities included
            values = chunk.float() if chunk.dtype in _HALF_FLOATS else chunk
            counts += torch.histc(values, bins=bins, min=lo, max=hi).to(torch.float64)
        else:
            for start in range(0, chunk.numel(), CHUNK_ELEMENTS):
                wide = to_wide(chunk[start : start + CHUNK_ELEMENTS])
                finite = wide[wide.isfinite()]
                if finite.is_complex():
                    finite = finite.abs()
                counts += torch.histc(finite, bins=bins, min=lo, max=hi).to(torch.float64)
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
