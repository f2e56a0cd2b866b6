"""What the logs say about packs: where each packed blob is, and which packs are sealed.

The record log feeds this index as it reads (``blob`` and ``seal`` entries); writers add what
they pack themselves.  Blob lines are kept unparsed until a packed blob is first looked up: most
opens only list names, and a store may hold millions of small blobs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..errors import Finding, StoreError
from ..format import PackedBlob, decode_blob_line


class PackIndex:
    """Every place the logs read so far put each packed blob, in the order read.  gc may copy a
    blob to a new pack before deleting the old one, so a blob can have several; some may be gone."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._places: dict[str, list[PackedBlob]] = {}
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
        places = self._places.setdefault(entry.blob, [])
        if entry not in places:
            places.append(entry)

    def seal(self, pack_id: str) -> None:
        self.sealed.add(pack_id)

    def all(self) -> dict[str, list[PackedBlob]]:
        """Digest -> places, every pending line parsed first."""
        if self._pending:
            with self._lock:
                for line, log, number in self._pending:
                    where = f"{log} line {number}"
                    try:
                        entry = decode_blob_line(line, where)
                    except StoreError as exc:
                        if self.count_damage(log, number):
                            self.problems[(log, number)] = damaged_line(where, exc)
                        continue
                    self.add(entry)
                self._pending.clear()
        return self._places

    def places(self, digest: str) -> list[PackedBlob]:
        return list(self.all().get(digest, ()))

    def __contains__(self, digest: str) -> bool:
        return digest in self.all()


def damaged_line(where: str, exc: Exception) -> Finding:
    """A log line that cannot be read, as a finding that starts with where it is."""
    message = str(exc)
    if not message.startswith(where + ": "):
        message = f"{where}: {message}"
    return Finding("damaged-record", message)
