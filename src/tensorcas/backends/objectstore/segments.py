"""Appending where objects cannot grow: a logical object as a chain of immutable segments.

A logical object that grows (a log, a pack) is a run of segments,
``<key>.seg/<end offset, 20 digits>``, each published with one conditional put.  The first,
empty, ``<key>.seg/00000000000000000000`` marks its creation; each append adds the segment holding
its bytes, named by the logical offset where they end.  So an append lands whole or not at all (a
writer killed mid-request leaves no torn line), and a segment is never overwritten.  The
segments of a key form a chain (each one's size is its end minus the previous end, starting at
the empty first segment); only that chain is the object, so a segment planted out of place is
ignored, and deleting the first segment removes the object.

This module knows the names, the chain and the appender; listing and reading segments is the
backend's (``backend.py``), which the appender reaches through :class:`SegmentHost`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ...errors import StoreError
from ..base import Appender, Data

#: A closed log or pack up to this size is consolidated into one object (see ``SegmentAppender``).
CONSOLIDATE_LIMIT = 64 << 20

#: What separates a logical key from its segments' names.
SEGMENTS = ".seg/"
_END_DIGITS = 20


def segment_key(key: str, end: int) -> str:
    """The name of the segment of ``key`` that ends at logical offset ``end``."""
    return f"{key}{SEGMENTS}{end:0{_END_DIGITS}d}"


def split_segment(path: str) -> tuple[str, int] | None:
    """``(logical key, end)`` if ``path`` names a segment, else ``None``."""
    key, sep, tail = path.partition(SEGMENTS)
    if not sep or not key or len(tail) != _END_DIGITS or not tail.isdigit():
        return None
    return key, int(tail)


# A segment as listed: (end, size, mtime).
Listed = tuple[int, int, float]
# A logical object's chain: (end, mtime) of each segment in order, the empty first one included.
Chain = list[tuple[int, float]]


def chain_of(listed: list[Listed]) -> Chain | None:
    """The chain of segments starting at the empty first one, each continuing the previous;
    ``None`` if there is no first segment (the object does not exist)."""
    chain: Chain = []
    for end, size, mtime in sorted(listed):
        previous = chain[-1][0] if chain else 0
        if not chain:
            if end != 0 or size != 0:
                return None
        elif end <= previous or size != end - previous:
            break  # not a continuation: the object ends here
        chain.append((end, mtime))
    return chain or None


def timestamp(meta: Mapping[str, Any]) -> float:
    """An obstore object's modification time, as a Unix time."""
    return float(meta["last_modified"].timestamp())


class SegmentHost(Protocol):
    """What an appender needs of the backend that holds its segments."""

    def _where(self, key: str) -> str: ...

    def _put(self, key: str, data: Data, *, create: bool) -> bool: ...

    def _get_range(self, key: str, start: int, end: int) -> bytes | None: ...

    def _refresh_segments(self, key: str) -> Chain | None: ...

    def _appended(self, key: str, start: int, end: int) -> None: ...

    def _consolidate(self, key: str, data: bytearray, ends: Sequence[int]) -> None: ...


class SegmentAppender(Appender):
    """Appends to one logical object as segments; each ``append`` is one conditional put.

    It keeps a copy of what it appended (up to :data:`CONSOLIDATE_LIMIT`), so that ``close`` can
    replace the segments by one plain object: a closed log or pack then costs one request to
    list and one to read, not one per append."""

    def __init__(self, backend: SegmentHost, key: str) -> None:
        self._backend = backend
        self._key = key
        self._end = 0
        self._ends = [0]
        self._kept: bytearray | None = bytearray()
        self._closed = False
        self._uncertain = False
        self._lock = threading.Lock()

    def append(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                raise StoreError(f"{self._backend._where(self._key)} is closed")
            if not data:
                return
            backend = self._backend
            if self._uncertain:
                # The last append failed: it may have landed anyway.  Continue after what is there.
                chain = backend._refresh_segments(self._key)
                if chain is None:
                    raise StoreError(f"{backend._where(self._key)} vanished while it was written")
                self._end = chain[-1][0]
                self._ends = [end for end, _ in chain]
                self._uncertain = False
            end = self._end + len(data)
            name = segment_key(self._key, end)
            try:
                published = backend._put(name, data, create=True)
            except BaseException:
                self._uncertain = True
                self._kept = None  # what the object holds is not known here any more
                raise
            # Not published: a retried put whose first attempt landed, or someone else's segment.
            if not published and backend._get_range(name, 0, len(data) + 1) != bytes(data):
                self._uncertain = True
                self._kept = None
                raise StoreError(
                    f"{backend._where(name)} was written by someone else: two writers append to "
                    f"{self._key}; each writer must have an id of its own"
                )
            self._end = end
            self._ends.append(end)
            if self._kept is not None:
                self._kept += data
                if len(self._kept) > CONSOLIDATE_LIMIT:
                    self._kept = None
            backend._appended(self._key, end - len(data), end)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            kept, self._kept = self._kept, None
            if kept is None or len(self._ends) < 3 or self._uncertain:
                return  # nothing worth consolidating (or not known exactly)
            try:
                self._backend._consolidate(self._key, kept, self._ends)
            except StoreError:
                pass  # the segments stay, as readable as before
