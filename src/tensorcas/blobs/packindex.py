"""What the logs say about packs: where each packed blob is, and which packs are sealed.

The record log feeds this index as it reads (``blob`` and ``seal`` entries); writers add what
they pack themselves.  Blob lines are kept unparsed until a packed blob is first looked up: most
opens only list names, and a store may hold millions of small blobs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..errors import Finding, StoreError
from ..format import PackedBlob, decode_blob_fields

#: One place of a packed blob: ``(nbytes, pack id, offset)``.  A plain tuple of atoms, which the
#: cyclic garbage collector stops tracking: a store of millions of small blobs then adds nothing
#: to the work of every later collection in the process, as an object (and a list) per blob would.
Place = tuple[int, str, int]


class PackIndex:
    """Every place the logs read so far put each packed blob, in the order read.  gc may copy a
    blob to a new pack before deleting the old one, so a blob can have several; some may be gone."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        #: Digest -> its one place, or a list of them (in the order read) where there are several.
        self._places: dict[str, Place | list[Place]] = {}
        #: One string per pack id, shared by all its places.
        self._pack_ids: dict[str, str] = {}
        #: Blob lines read but not parsed yet: (line, log key, line number).
        self._pending: list[tuple[bytes, str, int]] = []
        #: Ids of packs whose writers said they will never append to them again.
        self.sealed: set[str] = set()
        #: Blob lines that could not be read, by (log key, line number).
        self.problems: dict[tuple[str, int], Finding] = {}
        #: Counts a damaged line of a log; whether to keep it as an example (the record log
        #: sets this, so that a log of millions of damaged lines costs bounded memory).
        self.count_damage: Callable[[str, int], bool] = lambda log, number: True

    def defer(self, line: bytes, log: str, number: int) -> None:
        """Keep a blob line for parsing when a packed blob is first looked up."""
        self._pending.append((line, log, number))

    def add(self, entry: PackedBlob) -> None:
        self._add(entry.blob, entry.nbytes, entry.pack, entry.offset)

    def _add(self, digest: str, nbytes: int, pack: str, offset: int) -> None:
        place = (nbytes, self._pack_ids.setdefault(pack, pack), offset)
        current = self._places.get(digest)
        if current is None:
            self._places[digest] = place
        elif isinstance(current, tuple):
            if current != place:
                self._places[digest] = [current, place]
        elif place not in current:
            current.append(place)

    def seal(self, pack_id: str) -> None:
        self.sealed.add(pack_id)

    def parse(self) -> None:
        """Parse every pending blob line (damaged ones go to :attr:`problems`)."""
        if not self._pending:
            return
        with self._lock:
            add = self._add
            for line, log, number in self._pending:
                where = f"{log} line {number}"
                try:
                    add(*decode_blob_fields(line, where))
                except StoreError as exc:
                    if self.count_damage(log, number):
                        self.problems[(log, number)] = damaged_line(where, exc)
            self._pending.clear()

    def first(self, digest: str) -> Place | None:
        """The first place the logs give for ``digest`` (the one a reader tries first)."""
        if self._pending:
            self.parse()
        found = self._places.get(digest)
        if found is None or isinstance(found, tuple):
            return found
        return found[0]

    def later(self, digest: str) -> list[Place]:
        """The places after :meth:`first` (gc's copies, mostly), in the order read."""
        found = self._places.get(digest)
        return found[1:] if isinstance(found, list) else []

    def places(self, digest: str) -> list[PackedBlob]:
        if self._pending:
            self.parse()
        found = self._places.get(digest)
        if found is None:
            return []
        each = [found] if isinstance(found, tuple) else found
        return [PackedBlob(digest, nbytes, pack, offset) for nbytes, pack, offset in each]

    def all(self) -> dict[str, list[PackedBlob]]:
        """Digest -> places, every pending line parsed first (a new dict: for whole-store tools)."""
        self.parse()
        with self._lock:
            return {digest: self.places(digest) for digest in self._places}

    def __contains__(self, digest: str) -> bool:
        if self._pending:
            self.parse()
        return digest in self._places


def damaged_line(where: str, exc: Exception) -> Finding:
    """A log line that cannot be read, as a finding that starts with where it is."""
    message = str(exc)
    if not message.startswith(where + ": "):
        message = f"{where}: {message}"
    return Finding("damaged-record", message)
