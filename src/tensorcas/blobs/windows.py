"""Small packed blobs read in order, served from one larger read of their pack.

A reader loading a repro's inputs, or the small tensors of a checkpoint, asks for the blobs of a
pack one after another in the order they were written.  Each costs a request of a few KiB: a
system call on disk, a ranged GET on object storage.  Once a read of a pack starts where (or
shortly after where) the previous read of that pack ended, it reads a window of ``WINDOW`` bytes
from there instead, and the next blobs inside the window are copied out of memory: a pack of
5,000 small tensors is then about a dozen reads, not 5,000.  Reads that jump around a pack (one
tensor of a large store) never read a window, so they cost what they did.

Only sealed packs are read this way: their writer will never append to them again, so every
byte of a window is final.  In an open pack a window could end inside a blob still being
written, and serve it torn once its log line appears.  Bytes at a logged place never change
(gc writes new packs and deletes old ones, it never rewrites one), so a window stays right for
as long as it is kept; a deleted pack's window answers as a kept-open file would.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

#: Bytes read at once from a pack whose blobs are being read in order.
WINDOW = 1 << 20
#: Windows kept (the most recently used), one per pack: the memory a reader spends on them.
MAX_WINDOWS = 4
#: A read that starts at most this far past where the previous read of its pack ended still
#: counts as reading in order (blobs of a pack that were not asked for lie between).
NEAR = 64 << 10
#: No window reaches offsets this large: a damaged record's offset must not make the read's end
#: overflow the system's file offsets where the blob's own read would not.
_MAX_OFFSET = 1 << 62
#: Packs whose last read end is remembered, at most (the count is reset past it).
_MAX_TRACKED = 4096


class PackWindows:
    """The windows of one store's packs.  ``read_range`` is the backend's: ``(key, offset,
    length) -> bytes`` (shorter at the end of the object), or ``None`` where it is missing."""

    def __init__(self, read_range: Callable[[str, int, int], bytes | None]) -> None:
        self._read_range = read_range
        self._lock = threading.Lock()
        #: Pack key -> (offset, bytes) of its window, the least recently used first.
        self._windows: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        #: Pack key -> where its last read ended.
        self._ends: dict[str, int] = {}

    def read(self, key: str, offset: int, nbytes: int) -> memoryview | None:
        """The ``nbytes`` at ``offset`` of sealed pack ``key``, from a window (read now if this
        read goes on in order); ``None`` where the caller should read them itself."""
        with self._lock:
            window = self._windows.get(key)
            if window is not None:
                start, data = window
                if start <= offset and offset + nbytes <= start + len(data):
                    self._windows.move_to_end(key)
                    return memoryview(data)[offset - start : offset - start + nbytes]
            last = self._ends.get(key)
            if len(self._ends) >= _MAX_TRACKED:
                self._ends.clear()
            self._ends[key] = offset + nbytes
        if last is None or not last <= offset <= last + NEAR or offset >= _MAX_OFFSET or nbytes > WINDOW:
            return None
        read = self._read_range(key, offset, WINDOW)
        if read is None or len(read) < nbytes:
            return None  # cut short: the caller's own read says what is wrong
        with self._lock:
            self._windows[key] = (offset, read)
            self._windows.move_to_end(key)
            while len(self._windows) > MAX_WINDOWS:
                self._windows.popitem(last=False)
        return memoryview(read)[:nbytes]
