"""``cp``: copy a store's tensors and storage roots to another location (a directory, ``s3://``...),
sending only the blobs the target lacks.

The target gets the source's records for the names copied (a name the target holds with the
same record is left alone), written by a writer of its own, so copying is safe while others
write to either store.  A blob's bytes are read from the source only when the target has no copy
of them, and are hashed on the way: damaged source bytes are never stored under their digest
(the copy stops with :class:`CorruptObjectError`, and ``verify`` says more).  Copying again
after the source changed sends only what is new.  Names the target holds that the source does
not are kept: ``cp`` adds and updates, it does not delete.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import format as fmt
from ..backends.base import READ_WINDOW, Backend
from ..backends.memory import MemoryBackend
from ..blobs.locations import Loose, Packed
from ..errors import CorruptObjectError, StoreNotFoundError
from ..hashing import new_hasher
from ..placement import Placement
from ..store import Location, Store
from ._common import Progress, open_store


@dataclass
class CopyReport:
    """What ``cp`` copied (or, with ``dry_run``, would copy)."""

    source: str
    target: str
    dry_run: bool = False
    copied: list[str] = field(default_factory=list)  # names whose records were written
    unchanged: int = 0  # names the target already held with the same record
    roots: int = 0  # storage roots written
    blobs_sent: int = 0  # blobs whose bytes were sent to the target
    bytes_sent: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def copy_store(
    src: Location | Store,
    dst: Location | Store,
    prefix: str = "",
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> CopyReport:
    """Copy the tensors below ``prefix`` (all by default) and every storage root from ``src`` to
    ``dst`` (created if new).  ``progress(bytes sent, bytes to check)`` is called as it goes."""
    if prefix:
        fmt.validate_prefix(prefix)
    source = open_store(src, read_only=True)
    if isinstance(dst, Store):
        target = dst
    elif not dry_run:
        target = Store.open(dst, create=True)
    else:
        try:
            target = Store.open(dst, read_only=True)
        except StoreNotFoundError:  # nothing there yet: everything would be copied
            target = Store.open(MemoryBackend(), create=True)
    where = _describe(dst, target)
    report = CopyReport(source.location, where, dry_run)
    source.refresh()
    target.refresh()
    records = source.records(prefix)
    roots = source.roots() if not prefix else {}
    total = sum(r.nbytes for r in records) + sum(e.nbytes for e in roots.values())
    done = 0

    def advance(nbytes: int) -> None:
        nonlocal done
        done += nbytes
        if progress is not None:
            progress(done, total)

    todo = []
    for record in records:
        if target.log.peek(record.name) == record:
            report.unchanged += 1
            advance(record.nbytes)
        else:
            todo.append(record)
    if dry_run:
        report.copied = [r.name for r in todo]
        report.roots = sum(1 for d in roots if d not in target.roots())
        lacking = {r.blob: r.nbytes for r in todo if not target.blobs.present(r.blob, r.nbytes)}
        report.blobs_sent, report.bytes_sent = len(lacking), sum(lacking.values())
        return report

    log = target.open_log()
    placement = Placement(target, log)
    try:
        for record in todo:
            placed = placement.known(
                record.blob, record.nbytes, _Source(source, record.blob, record.nbytes, report)
            )
            log.put(record, placed.packed)
            placement.confirm(placed)
            report.copied.append(record.name)
            advance(record.nbytes)
        target_roots = target.roots()
        for digest, entry in roots.items():
            if digest not in target_roots:
                placed = placement.known(
                    digest, entry.nbytes, _Source(source, digest, entry.nbytes, report)
                )
                log.root(digest, entry.nbytes, entry.aliases, placed.packed)
                placement.confirm(placed)
                report.roots += 1
            advance(entry.nbytes)
    finally:
        log.close()
    return report


def _describe(dst: Location | Store, target: Store) -> str:
    """The target's location as the caller named it (a dry run may stand in an empty store)."""
    if isinstance(dst, (Store, Backend)):
        return dst.location
    return os.fspath(dst) if isinstance(target.backend, MemoryBackend) else target.location


class _Source:
    """The bytes of one source blob, read when the target lacks them, checked against their
    digest as they pass: a mismatch raises before the last piece, so nothing is published."""

    def __init__(self, store: Store, digest: str, nbytes: int, report: CopyReport) -> None:
        self.store = store
        self.digest = digest
        self.nbytes = nbytes
        self.report = report

    def __call__(self) -> Iterator[memoryview]:
        found = self.store.blobs.locate(self.digest)
        if found is None:
            raise CorruptObjectError(
                f"blob {self.digest} is missing from the source {self.store.location}; "
                f"run 'tensorcas verify {self.store.location}'"
            )
        location = found[0]
        key, base = (
            (location.pack, location.offset) if isinstance(location, Packed) else (location.key, 0)
        )
        assert isinstance(location, (Packed, Loose))
        hasher = new_hasher(self.nbytes)
        offset = 0
        self.report.blobs_sent += 1
        while offset < self.nbytes:
            piece = self.store.backend.read_range(
                key, base + offset, min(READ_WINDOW, self.nbytes - offset)
            )
            if not piece:
                break
            hasher.update(piece)
            offset += len(piece)
            if offset >= self.nbytes:
                self._check(hasher.hexdigest(), offset)
            self.report.bytes_sent += len(piece)
            yield memoryview(piece)
        if offset != self.nbytes:
            self._check("", offset)

    def _check(self, hexdigest: str, got: int) -> None:
        if got != self.nbytes or fmt.format_digest(hexdigest) != self.digest:
            raise CorruptObjectError(
                f"blob {self.digest} in the source {self.store.location} is damaged (its bytes do not "
                f"hash to its digest, or it holds {got} of {self.nbytes} bytes); nothing was stored "
                f"under it. Run 'tensorcas verify {self.store.location}'"
            )
