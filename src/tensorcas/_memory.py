"""Host memory for blobs being read: large storages whose pages are made present in one step.

Reading a blob into new memory costs one page fault per page the read first touches: 8,192 of
them for 32 MiB of 4 KiB pages, and they, not the copy, dominate an eager read from the page
cache.  So a large read target is allocated by torch as usual (an ordinary, resizable, shareable
storage) and its pages are populated with one ``madvise(MADV_POPULATE_WRITE)`` call (Linux 5.14
and later; elsewhere the storage is simply left to fault page by page, as before).

Asking for transparent huge pages instead (``MADV_HUGEPAGE``) was faster in isolation but slower
inside the benchmark, where the kernel's synchronous compaction for such regions stalled some
reads for a second or more.  Measured with ``benchmarks/bench.py --only read`` (1 GiB, median of
5, two runs each): 0.48 and 0.50 s populated, 0.58 and 0.62 s left to fault, 0.87 and 0.83 s
with huge pages.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

import torch

#: Storages at least this large are populated in one step; for smaller ones it gains little.
POPULATE_THRESHOLD = 4 << 20
_PAGE = 4096
_MADV_POPULATE_WRITE = 23  # linux/mman.h; not in Python's mmap module before 3.13


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


def empty_cpu_storage(nbytes: int) -> torch.UntypedStorage:
    """A new CPU storage of ``nbytes`` (contents undefined), its pages present where possible."""
    storage = torch.UntypedStorage(nbytes)
    if _madvise is not None and nbytes >= POPULATE_THRESHOLD:
        start = storage.data_ptr()
        first = -(-start // _PAGE) * _PAGE
        last = (start + nbytes) // _PAGE * _PAGE
        if last > first:
            # Only advice: an older kernel refuses it (EINVAL), and the storage then works
            # exactly as without it, faulting its pages in as the read touches them.
            _madvise(first, last - first, _MADV_POPULATE_WRITE)
    return storage
