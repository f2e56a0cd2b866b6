"""Small packed blobs read in order, served from larger reads of their pack.

A reader loading a repro's inputs, or the small tensors of a checkpoint, asks for the blobs of a
pack one after another in the order they were written.  Each costs a request of a few KiB: a
system call on disk, a ranged GET on object storage.  Once a read of a pack starts where (or
shortly after where) an earlier read of that pack ended, it reads a *window* from there instead,
and the next blobs inside the window are copied out of memory: a pack of 5,000 small tensors is
then about a dozen reads, not 5,000.  Reads that jump around a pack (one tensor of a large store)
never read a window, so they cost what they did.

Windows grow as a run of reads goes on, as a system's read-ahead does: the first is
``FIRST_WINDOW`` bytes, each next one of the run twice the last, up to ``WINDOW``.  A window
dropped (to keep memory bounded) before its run reached its end starts the run small again.  So
reads that take turns between more runs than windows are kept (tensors written by many writers
at once, read in the order they were written: one run per pack) read at most a few times the
bytes they use, never a whole large window per small blob.  A pack may have several runs at once
(``RUNS`` are followed), each with its own window.

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

#: The largest read of a pack whose blobs are being read in order.
WINDOW = 1 << 20
#: The first window of a run of reads in order (then twice as large each time, up to WINDOW).
FIRST_WINDOW = 64 << 10
#: Bytes of all windows kept together (the most recently used): the memory a reader spends.
MAX_WINDOW_BYTES = 4 * WINDOW
#: Windows kept at most, whatever their size (a pack's last window may be small).
MAX_WINDOWS = 16
#: Runs of reads in order followed per pack (readers taking turns between parts of one pack).
RUNS = 4
#: A read that starts at most this far past where a run ended still goes on with it (blobs of a
#: pack that were not asked for lie between).
NEAR = 64 << 10
#: No window reaches offsets this large: a damaged record's offset must not make the read's end
#: overflow the system's file offsets where the blob's own read would not.
_MAX_OFFSET = 1 << 62
#: Packs whose runs are remembered, at most (all are forgotten past it).
_MAX_TRACKED = 4096


class _Run:
    """Reads of one pack in order: where the last one ended, the size of its next window."""

    __slots__ = ("end", "size")

    def __init__(self, end: int) -> None:
        self.end = end
        self.size = FIRST_WINDOW


class _Window:
    __slots__ = ("data", "key", "run", "start")

    def __init__(self, key: str, start: int, data: bytes, run: _Run) -> None:
        self.key, self.start, self.data, self.run = key, start, data, run


class PackWindows:
    """The windows of one store's packs.  ``read_range`` is the backend's: ``(key, offset,
    length) -> bytes`` (shorter at the end of the object), or ``None`` where it is missing."""

    def __init__(self, read_range: Callable[[str, int, int], bytes | None]) -> None:
        self._read_range = read_range
        self._lock = threading.Lock()
        #: Pack key -> its windows (at most a few).
        self._by_pack: dict[str, list[_Window]] = {}
        #: Every window, the least recently used first.
        self._lru: OrderedDict[_Window, None] = OrderedDict()
        self._bytes = 0
        #: Pack key -> its runs, the most recently continued last.
        self._runs: dict[str, list[_Run]] = {}

    @property
    def windows(self) -> list[tuple[str, int, int]]:
        """``(pack key, offset, length)`` of each window kept, the least recently used first."""
        with self._lock:
            return [(w.key, w.start, len(w.data)) for w in self._lru]

    def read(self, key: str, offset: int, nbytes: int) -> memoryview | None:
        """The ``nbytes`` at ``offset`` of sealed pack ``key``, from a window (read now if this
        read goes on in order); ``None`` where the caller should read them itself."""
        with self._lock:
            run = None
            for window in self._by_pack.get(key, ()):
                start, data = window.start, window.data
                if start <= offset < start + len(data):
                    if offset + nbytes <= start + len(data):
                        self._lru.move_to_end(window)
                        return memoryview(data)[offset - start : offset - start + nbytes]
                    run = window.run  # a blob across the window's end: the run goes on
                    break
            runs = self._runs.get(key)
            if runs is None:
                if len(self._runs) >= _MAX_TRACKED:
                    self._runs.clear()
                runs = self._runs[key] = []
            if run is None:
                for candidate in runs:
                    if candidate.end <= offset <= candidate.end + NEAR:
                        run = candidate
                        break
            if run is None or offset >= _MAX_OFFSET or nbytes > WINDOW:
                runs.append(_Run(offset + nbytes))  # may start a run
                if len(runs) > RUNS:
                    del runs[0]
                return None
            length = max(run.size, nbytes)
            run.size = min(2 * run.size, WINDOW)
            run.end = offset + length
        read = self._read_range(key, offset, length)
        if read is None or len(read) < nbytes:
            return None  # cut short: the caller's own read says what is wrong
        with self._lock:
            run.end = offset + len(read)
            for window in self._by_pack.get(key, ()):
                if window.run is run:  # passed by its run: the new window takes its place
                    self._drop(window)
                    break
            self._keep(_Window(key, offset, read, run))
        return memoryview(read)[:nbytes]

    def _keep(self, window: _Window) -> None:
        """Keep ``window``, dropping the least recently used ones past the limits (under the lock)."""
        self._by_pack.setdefault(window.key, []).append(window)
        self._lru[window] = None
        self._bytes += len(window.data)
        while self._bytes > MAX_WINDOW_BYTES or len(self._lru) > MAX_WINDOWS:
            old = next(iter(self._lru))
            self._drop(old)
            if old.run.end == old.start + len(old.data):
                # Dropped before its run went past it: the run starts small again.
                old.run.size = FIRST_WINDOW

    def _drop(self, window: _Window) -> None:
        del self._lru[window]
        self._bytes -= len(window.data)
        kept = self._by_pack[window.key]
        kept.remove(window)
        if not kept:
            del self._by_pack[window.key]
