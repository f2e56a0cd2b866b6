"""``rm`` and ``gc``: forget names, then free the blobs no name uses any more.

``rm`` never deletes bytes: it appends delete entries (tombstones) to a log of its own, exactly as
``ContentStoreWriter.delete_tensor`` does, so it is safe while others write.

``gc`` deletes blobs that no current record references, and temporaries of interrupted writes.
Writers publish a blob before its record, and a writer that finds its blob already stored touches
it instead of writing it again.  So a blob that looks unreferenced may be about to be referenced by
a writer that is between those two steps.  gc therefore only deletes blobs not touched for the
grace period, through ``Backend.delete_if_stale``, which is atomic against a concurrent touch: a
writer either touched the blob in time (it is kept) or finds it gone and writes it again.  The
default grace period (one hour) is far longer than any writer spends between blob and record;
``grace_seconds=0`` collects everything unreferenced now and is safe only when nothing writes.

Small blobs (under ``store.PACK_THRESHOLD``) live in packs, append-only files that one writer
appends to for as long as it is open.  A pack cannot be deleted safely: a writer that holds it
open would go on appending to the deleted file, and its new records would point at bytes that are
gone; nothing in a store tells a closed writer's pack from an idle one's.  So gc leaves packs alone
and only reports the unreferenced bytes they hold.

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
from ..errors import StoreError, TensorNotFoundError
from ..store import Location, Store
from ..writer import ContentStoreWriter
from ._common import Progress, open_store

#: Name prefix of a blob that a gc moved aside to delete it (docs/FORMAT.md, "gc trash").
_TRASH_PREFIX = ".gc-"

#: The default grace period: blobs and temporaries touched within it are never collected.
DEFAULT_GRACE_SECONDS = 3600.0


class DamagedStoreError(StoreError):
    """gc refused to run because some log lines cannot be read.

    A record that cannot be read may still reference blobs, which would then look unreferenced and
    be deleted.  Run ``tensorcas verify`` to see the damage; pass ``force=True`` (``--force``) to
    collect anyway, accepting that the damaged records' blobs may be lost.
    """


@dataclass
class RmReport:
    location: str
    removed: list[str] = field(default_factory=list)
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def rm(loc: Location | Store, names: Iterable[str], *, dry_run: bool = False) -> RmReport:
    """Remove tensors by name.  A name ending in ``/`` removes everything below it
    (``model/`` removes ``model/w`` and ``model/sub/b``); any other name removes that tensor only.

    Every name and prefix is checked before anything is removed, so a typo removes nothing:
    :class:`TensorNotFoundError` names what matched nothing.  Blobs stay until ``gc``.
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
    report.removed = list(chosen)
    if dry_run or not report.removed:
        return report
    # The store was opened read-only to check the names; the writer opens it for writing.
    with ContentStoreWriter(loc.backend if isinstance(loc, Store) else loc) as writer:
        for name in report.removed:
            writer.delete_tensor(name)
    return report


@dataclass
class CollectedBlob:
    digest: str
    size: int


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
    # Small blobs live in packs that their writer may still append to; packs are never collected.
    packed_unreferenced_blobs: int = 0
    packed_unreferenced_bytes: int = 0

    @property
    def bytes_freed(self) -> int:
        return sum(b.size for b in self.removed_blobs) + self.temporary_bytes

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
    """Delete unreferenced blobs and temporaries not touched for ``grace_seconds``.

    Blobs are listed *before* the records are read: a blob whose record was published in between
    is then seen as referenced, and one whose record comes later was written or touched moments
    ago, so the grace period keeps it.  With ``dry_run`` nothing is deleted and the report lists
    what would be.  Raises :class:`DamagedStoreError` if some log lines cannot be read, unless
    ``force``.
    """
    if grace_seconds < 0:
        raise ValueError(f"grace_seconds must be >= 0, not {grace_seconds}")
    store = loc if isinstance(loc, Store) else Store.open(loc, read_only=dry_run)
    cutoff = time.time() - grace_seconds
    report = GcReport(store.location, dry_run, grace_seconds)

    listed = list(store.loose_blobs())
    store.refresh()
    referenced = {record.blob for record in store.records()}  # also finds damaged records
    damaged = [p for p in store.problems() if p.severity == "error"]
    if damaged and not force:
        raise DamagedStoreError(
            f"store {store.location} has {len(damaged)} unreadable log line(s) (first: {damaged[0].where}: "
            f"{damaged[0].message}); their blobs would look unused.  Run 'tensorcas verify {store.location}', "
            "then 'tensorcas gc --force' to collect anyway"
        )
    report.blobs_examined = len(listed)
    total = len(listed)
    for i, digest in enumerate(listed):
        if progress is not None:
            progress(i + 1, total)
        if digest in referenced:
            report.referenced += 1
            continue
        info = store.backend.stat(fmt.blob_key(digest))
        if info is None:
            continue  # collected meanwhile
        if info.mtime > cutoff:
            report.kept_recent += 1
            continue
        if dry_run or store.backend.delete_if_stale(fmt.blob_key(digest), cutoff):
            report.removed_blobs.append(CollectedBlob(digest, info.size))
        else:
            report.kept_recent += 1

    loose = set(listed)
    for pack_blobs in store.packs().values():
        for packed in pack_blobs:
            if packed.blob in referenced:
                report.referenced += packed.blob not in loose
            elif packed.blob not in loose:
                report.packed_unreferenced_blobs += 1
                report.packed_unreferenced_bytes += packed.nbytes

    for key, mtime in list(store.backend.temporaries()):
        if mtime > cutoff:
            continue
        if key.rpartition("/")[2].startswith(_TRASH_PREFIX):
            # Left by a gc that was interrupted: the backend links the blob back before removing
            # the trash name (a writer may have referenced it meanwhile); the next gc decides.
            if dry_run or store.backend.delete_temporary(key):
                report.restored_trash.append(key)
            continue
        info = store.backend.stat(key)
        if dry_run or store.backend.delete_temporary(key):
            report.removed_temporaries.append(key)
            report.temporary_bytes += info.size if info is not None else 0
    return report
