"""Host memory for blobs being read: large storages backed by transparent huge pages.

Reading a blob into new memory costs one page fault per page the read first touches: 8,192 of
them for 32 MiB of 4 KiB pages, and they, not the copy, dominate an eager read from the page
cache.  numpy avoids most of them by advising huge pages (``madvise(MADV_HUGEPAGE)``) for large
arrays, so that a fault maps 2 MiB at once; torch's CPU allocator does not unless the process
was started with ``THP_MEM_ALLOC_ENABLE=1``.  So a large read target is allocated by torch as
usual (an ordinary, resizable, shareable storage) and the 2 MiB-aligned part of it is given the
same advice numpy gives its arrays.  Where the kernel has no transparent huge pages, or they are
switched off, the advice is refused or ignored and the storage faults page by page as before.

Measured on a 2-core machine, 16 x 32 MiB read from the page cache, medians of 9 in one run:
``np.fromfile`` 123 ms; torch storages with huge-page advice 92 ms; the same with their pages
populated beforehand instead (``MADV_POPULATE_WRITE``) 209 ms.  The kernel may compact memory
synchronously to find a huge page, which stalls a read now and then (the slowest of the nine
samples: 410 ms, and 636 ms for ``np.fromfile``): numpy's arrays pay the same.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

import torch

#: Storages at least this large are advised; below it fewer than two huge pages fit.
HUGE_THRESHOLD = 4 << 20
_HUGE_PAGE = 2 << 20
_PAGE = 4096
_MADV_HUGEPAGE = 14  # linux/mman.h


def _libc_madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_madvise = _libc_madvise()


def huge_page_span(start: int, nbytes: int) -> tuple[int, int] | None:
    """The part of ``[start, start + nbytes)`` that whole huge pages can back, as (address,
    length), or None where none can; a huge page must start at a multiple of its size."""
    first = -(-start // _HUGE_PAGE) * _HUGE_PAGE
    last = (start + nbytes) // _PAGE * _PAGE
    return (first, last - first) if last - first >= _HUGE_PAGE else None


def empty_cpu_storage(nbytes: int) -> torch.UntypedStorage:
    """A new CPU storage of ``nbytes`` (contents undefined), backed by huge pages where the
    kernel offers them."""
    storage = torch.UntypedStorage(nbytes)
    if _madvise is not None and nbytes >= HUGE_THRESHOLD:
        span = huge_page_span(storage.data_ptr(), nbytes)
        if span is not None:
            # Only advice: a kernel without huge pages refuses it (EINVAL), and the storage
            # then works exactly as without it.
            _madvise(span[0], span[1], _MADV_HUGEPAGE)
    return storage
