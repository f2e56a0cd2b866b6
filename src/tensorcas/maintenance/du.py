"""``du``: how much the named tensors stand for, and how much the store really holds.

Deduplication is the point of a content-addressed store, so the numbers that matter are the two
sides of it: *logical* bytes (what every current tensor's own elements cover, as if each were saved
on its own) and *stored* bytes (the blobs on disk).  Storage roots (``write_storage``) count as
referenced.  Blobs that no current record or root references are counted apart, split the way
``gc`` decides (the same rule, ``_collect.pack_is_collectible``): what gc frees once the grace
period has passed (unused loose blobs, and packs it rewrites), and unused small blobs that stay
inside packs (packs still open, or mostly in use).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .. import format as fmt
from ..store import Location, Store
from ._collect import pack_is_collectible, pack_use
from ._common import open_store


@dataclass
class DiskUsage:
    """Sizes of one store, in bytes."""

    location: str
    names: int = 0
    logical_bytes: int = 0  # sum over current tensors of numel * itemsize
    referenced_blobs: int = 0
    referenced_bytes: int = 0  # distinct blobs current tensors use
    stored_blobs: int = 0  # loose and packed
    stored_bytes: int = 0  # every blob file and pack on disk, referenced or not
    packs: int = 0
    unreferenced_blobs: int = 0  # every unused blob: freeable_* plus packed_unused_*
    unreferenced_bytes: int = 0
    freeable_blobs: int = 0  # what gc frees once the grace period has passed
    freeable_bytes: int = 0  # (a rewritten pack frees its size less the blobs copied out)
    packed_unused_blobs: int = 0  # unused small blobs gc leaves in packs (open or mostly in use)
    packed_unused_bytes: int = 0
    roots: int = 0  # storage roots (write_storage): kept by gc without a name
    root_bytes: int = 0
    missing_blobs: int = 0  # referenced but absent: run verify
    unreadable: int = 0  # blob or pack entries that are not regular files: run verify
    log_bytes: int = 0
    largest: list[fmt.TensorRecord] = field(default_factory=list)

    @property
    def dedupe_ratio(self) -> float:
        """Logical bytes per referenced stored byte (1.0 means nothing was shared)."""
        return self.logical_bytes / self.referenced_bytes if self.referenced_bytes else 1.0

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "largest"}
        out["dedupe_ratio"] = self.dedupe_ratio
        out["largest"] = [
            {
                "name": r.name,
                "dtype": r.dtype,
                "shape": list(r.shape),
                "nbytes": r.view_nbytes,
                "blob": r.blob,
            }
            for r in self.largest
        ]
        return out


def du(loc: Location | Store, *, top: int = 10) -> DiskUsage:
    """Measure the store at ``loc``; ``top`` is how many of the largest tensors to list.  Read-only."""
    store = open_store(loc, read_only=True)
    usage = DiskUsage(location=store.location)
    records = store.records()
    usage.names = len(records)
    used: dict[str, int] = {}
    for record in records:
        usage.logical_bytes += record.view_nbytes
        used[record.blob] = record.nbytes
    usage.largest = sorted(records, key=lambda r: r.view_nbytes, reverse=True)[: max(top, 0)]
    for digest, root in store.roots().items():
        usage.roots += 1
        usage.root_bytes += root.nbytes
        used.setdefault(digest, root.nbytes)  # referenced: gc keeps it

    referenced = set(used)
    reachable = store.blobs.reachable_blobs()
    usage.unreadable = len(reachable.unreadable)
    present: set[str] = set()
    for digest, info in reachable.loose.items():
        present.add(digest)
        usage.stored_bytes += info.size
        _count(usage, digest in used, info.size)
        if digest not in used:
            usage.freeable_blobs += 1
            usage.freeable_bytes += info.size
    loose = set(present)
    for pack in reachable.packs.values():
        if pack.info is None:
            continue
        usage.packs += 1
        usage.stored_bytes += pack.info.size
        for place in pack.whole():
            if place.blob not in present:
                present.add(place.blob)
                _count(usage, place.blob in used, place.nbytes)
        live, unused = pack_use(pack.places, pack.info.size, referenced, loose)
        live_bytes = sum(p.nbytes for p in live.values())
        # The age of the pack is left out (cutoff: now and forever): du reports what gc frees
        # once the grace period has passed.
        if pack_is_collectible(
            sealed=pack.sealed, size=pack.info.size, live_bytes=live_bytes, mtime=0.0, cutoff=math.inf
        ):
            usage.freeable_blobs += len(unused)
            usage.freeable_bytes += pack.info.size - live_bytes
        else:
            usage.packed_unused_blobs += len(unused)
            usage.packed_unused_bytes += sum(unused.values())
    usage.missing_blobs = sum(1 for digest in used if digest not in present)
    usage.log_bytes = store.log.log_bytes()
    return usage


def _count(usage: DiskUsage, referenced: bool, size: int) -> None:
    usage.stored_blobs += 1
    if referenced:
        usage.referenced_blobs += 1
        usage.referenced_bytes += size
    else:
        usage.unreferenced_blobs += 1
        usage.unreferenced_bytes += size
