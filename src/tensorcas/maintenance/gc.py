"""``rm`` and ``gc``: forget names, then free the blobs no name uses any more.

``rm`` never deletes bytes: it appends delete entries (tombstones) to a log of its own, exactly as
``ContentStoreWriter.delete_tensor`` does, so it is safe while others write.

``gc`` deletes blobs that no current record or storage root references, and temporaries of
interrupted writes.  Writers publish a blob before its record, and a writer that finds its blob
already stored touches it instead of writing it again, so a blob that looks unreferenced may be
about to be referenced.  gc is therefore two-phase: it moves each candidate aside
(``Collector.quarantine``, atomic against a concurrent touch where the backend can mark objects in
use), reads the logs again, puts back what
is used by then and deletes the rest.  A writer checks, after appending its record, that the blob
is still there, and stores it again if not; so a record appended before gc's second read keeps
its blob, and one appended after it has its blob stored again.  No clock is trusted: this holds
for every grace period, 0 included.  The grace period (default one hour) spares work: blobs
touched within it are not moved at all, so writers rarely have to store anything twice.

Small blobs (under ``blobs.PACK_THRESHOLD``) live in packs, append-only files that one writer
appends to for as long as it is open.  A pack still open cannot be deleted: its writer would go on
appending to the deleted file.  So a writer seals its pack when it closes it (a ``seal`` log entry),
and gc only touches sealed packs: one whose bytes are at least half unused is deleted, after the
blobs in it that are still in use are re-hashed and copied to a new pack of gc's own.  Readers
look for a packed blob in every place the logs give and use the first that exists.

Logs are not compacted either.  Rewriting the live records into one new log and deleting the old logs is
not safe while a writer may still append to an old log (its new entries would be lost), and a
store cannot tell a finished log from an idle writer's; so ``gc`` leaves logs as they are.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import format as fmt
from ..blobs import Packed, Reachable
from ..errors import BlobNotFoundError, DamagedStoreError, StoreError, TensorNotFoundError
from ..hashing import hash_buffer
from ..store import Location, Store
from ._collect import pack_is_collectible
from ._common import Progress, open_store

#: The default grace period: blobs and temporaries touched within it are never collected.
DEFAULT_GRACE_SECONDS = 3600.0

#: Temporaries younger than this are never removed, whatever the grace period: they may be a
#: write in progress (a temporary is written to as its bytes arrive, so an active one stays
#: young), and removing one would fail that write.
TEMPORARY_MIN_AGE_SECONDS = 600.0


@dataclass
class RmReport:
    location: str
    removed: list[str] = field(default_factory=list)
    dry_run: bool = False
    removed_roots: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def rm(
    loc: Location | Store, names: Iterable[str], *, roots: Iterable[str] = (), dry_run: bool = False
) -> RmReport:
    """Remove tensors by name, and storage roots (``write_storage``) by digest.  A name ending
    in ``/`` removes everything below it (``model/`` removes ``model/w`` and ``model/sub/b``);
    any other name removes that tensor only.

    Every name, prefix and root is checked before anything is removed, so a typo removes
    nothing: :class:`TensorNotFoundError` names what matched nothing (``BlobNotFoundError`` for
    a digest that is not a root).  Blobs stay until ``gc``.
    """
    store = open_store(loc, read_only=True)
    report = RmReport(store.location, dry_run=dry_run)
    current = store.names()
    chosen: dict[str, None] = {}
    for spec in names:
        if spec.endswith("/"):
            fmt.validate_prefix(spec)
            matched = [n for n in current if fmt.name_matches(n, spec)]
            if not matched:
                raise TensorNotFoundError(
                    f"no tensor below {spec!r} in store {store.location}; list the names with 'tensorcas ls'"
                )
            chosen.update(dict.fromkeys(matched))
        else:
            fmt.validate_name(spec)
            if spec not in store:
                below = any(fmt.name_matches(n, spec + "/") for n in current)
                hint = f"; to remove the tensors below it, write {spec + '/'!r}" if below else ""
                raise TensorNotFoundError(
                    f"no tensor named {spec!r} in store {store.location}{hint}; list the names with 'tensorcas ls'"
                )
            chosen[spec] = None
    live_roots = store.roots()
    for digest in roots:
        digest = fmt.format_digest(fmt.parse_digest(digest))
        if digest not in live_roots:
            raise BlobNotFoundError(
                f"blob {digest} is not a storage root of store {store.location}; "
                "list the roots with 'tensorcas ls --roots'"
            )
        report.removed_roots.append(digest)
    report.removed = list(chosen)
    if dry_run or not (report.removed or report.removed_roots):
        return report
    # The store was opened read-only to check the names; the writer opens it for writing.
    from ..writer import ContentStoreWriter  # imports torch: only when something is removed

    with ContentStoreWriter(loc.backend if isinstance(loc, Store) else loc) as writer:
        writer.delete_tensors(report.removed)
        for digest in dict.fromkeys(report.removed_roots):
            writer.remove_root(digest)
    return report


@dataclass
class CollectedBlob:
    digest: str
    size: int


@dataclass
class CollectedPack:
    """A pack gc deleted, after copying the ``rewritten`` bytes still in use to a new pack."""

    key: str
    size: int
    rewritten: int


@dataclass
class GcReport:
    """What gc removed (or, with ``dry_run``, would remove)."""

    location: str
    dry_run: bool
    grace_seconds: float
    blobs_examined: int = 0
    referenced: int = 0
    removed_blobs: list[CollectedBlob] = field(default_factory=list)
    kept_recent: int = 0  # unreferenced but touched within the grace period
    removed_temporaries: list[str] = field(default_factory=list)
    temporary_bytes: int = 0
    restored_trash: list[str] = field(default_factory=list)  # see docs/FORMAT.md, "gc trash"
    removed_packs: list[CollectedPack] = field(default_factory=list)
    # Unused small blobs that stay: in packs still open (unsealed), touched within the grace
    # period, mostly in use (not worth rewriting), or damaged.
    packed_unreferenced_blobs: int = 0
    packed_unreferenced_bytes: int = 0

    @property
    def bytes_freed(self) -> int:
        return (
            sum(b.size for b in self.removed_blobs)
            + sum(p.size - p.rewritten for p in self.removed_packs)
            + self.temporary_bytes
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "dry_run": self.dry_run,
            "grace_seconds": self.grace_seconds,
            "blobs_examined": self.blobs_examined,
            "referenced": self.referenced,
            "removed_blobs": [vars(b) for b in self.removed_blobs],
            "kept_recent": self.kept_recent,
            "removed_temporaries": self.removed_temporaries,
            "restored_trash": self.restored_trash,
            "bytes_freed": self.bytes_freed,
            "removed_packs": [vars(p) for p in self.removed_packs],
            "packed_unreferenced_blobs": self.packed_unreferenced_blobs,
            "packed_unreferenced_bytes": self.packed_unreferenced_bytes,
        }


def gc(
    loc: Location | Store,
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    dry_run: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> GcReport:
    """Delete unreferenced blobs not touched for ``grace_seconds``, and temporaries not touched
    for that long nor for ``TEMPORARY_MIN_AGE_SECONDS`` (they may be writes in progress).

    A blob is kept while a current record or a storage root (``write_storage``) uses it.
    Collection is two-phase, so that no write that returned ever loses its blob, whatever the
    grace period and however the clocks of writers and filesystem disagree: every candidate is
    first moved aside (``Collector.quarantine``), then the logs are read again; a candidate that a
    record or root now uses is put back, the rest are deleted.  A writer whose record came after
    that second read finds its blob gone when it checks after appending, and stores it again.
    The grace period only spares work: bytes a writer stored moments ago are not moved at all.

    Objects a killed gc left moved aside are put back first.  With ``dry_run`` nothing is
    changed and the report lists what would be.  Raises :class:`DamagedStoreError` if some part
    of the logs cannot be read, unless ``force``.
    """
    if grace_seconds < 0:
        raise ValueError(f"grace_seconds must be >= 0, not {grace_seconds}")
    store = loc if isinstance(loc, Store) else Store.open(loc, read_only=dry_run)
    blobs = store.blobs
    cutoff = time.time() - grace_seconds
    report = GcReport(store.location, dry_run, grace_seconds)
    leftovers = blobs.collector.leftovers()
    for leftover in leftovers:
        if leftover.restores and (dry_run or blobs.collector.remove_leftover(leftover)):
            report.restored_trash.append(leftover.key)

    reachable = blobs.reachable_blobs()  # loose blobs listed before the records are read
    if reachable.unreadable:
        # Never collect beside a part of the store that cannot be read (verify reports it).
        raise next(iter(reachable.unreadable.values()))
    store.refresh()
    referenced = store.referenced_blobs()  # also finds damaged records
    _refuse_damage(store, force)
    report.blobs_examined = len(reachable.loose)
    moved: list[tuple[str, str, int]] = []  # (digest, trash key, size)
    total = len(reachable.loose)
    for i, (digest, info) in enumerate(reachable.loose.items()):
        if progress is not None:
            progress(i + 1, total)
        if digest in referenced:
            report.referenced += 1
            continue
        if info.mtime > cutoff:
            report.kept_recent += 1
            continue
        if dry_run:
            report.removed_blobs.append(CollectedBlob(digest, info.size))
            continue
        trash = blobs.collector.quarantine(fmt.blob_key(digest), cutoff)
        if trash is None:
            report.kept_recent += 1
        else:
            moved.append((digest, trash, info.size))

    moved_packs = _collect_packs(store, reachable, referenced, cutoff, dry_run, report)
    if moved or moved_packs:
        _decide(store, force, moved, moved_packs, report)

    temporary_cutoff = min(cutoff, time.time() - TEMPORARY_MIN_AGE_SECONDS)
    for leftover in leftovers:
        if leftover.restores or leftover.mtime > temporary_cutoff:
            continue
        if dry_run or blobs.collector.remove_leftover(leftover):
            report.removed_temporaries.append(leftover.key)
            report.temporary_bytes += leftover.size
    return report


def _refuse_damage(store: Store, force: bool) -> None:
    damaged = [p for p in store.problems() if p.severity == "error"]
    if damaged and not force:
        raise DamagedStoreError(
            f"store {store.location} has {sum(p.count for p in damaged)} unreadable log line(s) or log(s) (first: "
            f"{damaged[0].message}); the blobs they use would look unused. Run "
            f"'tensorcas verify {store.location}', then 'tensorcas gc --force {store.location}' to collect anyway"
        )


@dataclass
class _MovedPack:
    collected: CollectedPack
    trash: str
    places: list[fmt.PackedBlob]
    copied: set[str]


def _decide(
    store: Store,
    force: bool,
    moved: list[tuple[str, str, int]],
    moved_packs: list[_MovedPack],
    report: GcReport,
) -> None:
    """Second phase: read the logs again, put back what a record or root uses now, delete the
    rest.  If new damage appeared meanwhile, put everything back and refuse (unless ``force``)."""
    try:
        store.refresh()
        referenced = store.referenced_blobs()
        _refuse_damage(store, force)
    except BaseException:
        for _, trash, _ in moved:
            store.blobs.collector.restore(trash)
        for pack in moved_packs:
            store.blobs.collector.restore(pack.trash)
        raise
    for digest, trash, size in moved:
        if digest in referenced:
            store.blobs.collector.restore(trash)
            report.kept_recent += 1
        else:
            store.blobs.collector.purge(trash)
            report.removed_blobs.append(CollectedBlob(digest, size))
    for pack in moved_packs:
        if any(p.blob in referenced and p.blob not in pack.copied for p in pack.places):
            store.blobs.collector.restore(pack.trash)  # a blob in it is used again: kept
        else:
            store.blobs.collector.purge(pack.trash)
            report.removed_packs.append(pack.collected)


def _collect_packs(
    store: Store,
    reachable: Reachable,
    referenced: set[str],
    cutoff: float,
    dry_run: bool,
    report: GcReport,
) -> list[_MovedPack]:
    """Move aside sealed packs that hold unused blobs, first copying the blobs still in use to a
    new pack of gc's own (readers try every place the logs give for a packed blob).

    Only sealed packs (their writer closed them) are touched, since an open writer would go on
    appending to a deleted file.  A pack is rewritten only when at least half its bytes are unused,
    so a gc does not copy much to free little.  Copied blobs are re-hashed first: a damaged blob
    is never copied under its digest, and its pack is left for ``verify`` to report.  Packs are
    moved aside through ``Collector.quarantine`` and decided in the second phase like loose blobs.
    """
    copied: set[str] = set()
    rewriter = None
    moved: list[_MovedPack] = []
    try:
        for key, pack in reachable.packs.items():
            info = pack.info
            if info is None:
                continue  # already deleted: the logs still name it, readers skip it
            live: dict[str, Packed] = {}
            unused: dict[str, int] = {}
            for place in pack.whole():
                if place.blob in referenced:
                    live.setdefault(place.blob, Packed.of(place))
                    report.referenced += place.blob not in reachable.loose and place.blob not in copied
                elif place.blob not in reachable.loose:
                    unused[place.blob] = place.nbytes
            live_bytes = sum(p.nbytes for p in live.values())
            if not pack_is_collectible(
                sealed=pack.sealed, size=info.size, live_bytes=live_bytes, mtime=info.mtime, cutoff=cutoff
            ):
                report.packed_unreferenced_blobs += len(unused)
                report.packed_unreferenced_bytes += sum(unused.values())
                continue
            copies = _read_verified(store, {d: p for d, p in live.items() if d not in copied})
            if copies is None:  # damaged: leave the pack for verify to report
                report.packed_unreferenced_blobs += len(unused)
                report.packed_unreferenced_bytes += sum(unused.values())
                continue
            collected = CollectedPack(key, info.size, live_bytes)
            if dry_run:
                report.removed_packs.append(collected)
                continue
            if copies and rewriter is None:
                rewriter = store.open_log()
            for digest, data in copies:
                assert rewriter is not None
                rewriter.put_packed(digest, data)
                copied.add(digest)
            trash = store.blobs.collector.quarantine(key, cutoff)
            if trash is not None:  # else reused meanwhile: kept (the copies are harmless duplicates)
                moved.append(_MovedPack(collected, trash, list(pack.places), set(copied)))
    finally:
        if rewriter is not None:
            rewriter.close()  # seals the new pack
    return moved


def _read_verified(store: Store, live: dict[str, Packed]) -> list[tuple[str, bytes]] | None:
    """The bytes of each live blob of a pack, or ``None`` if any of them is damaged."""
    out = []
    for digest, place in live.items():
        try:
            data = store.blobs.inventory.read_copy(place)
        except StoreError:
            return None
        if hash_buffer(data) != digest:
            return None
        out.append((digest, data))
    return out
