"""Where a blob lives: a typed location, and the inventory of every blob a store holds.

A blob (the bytes under one digest) is stored either *loose*, as an object of its own under
``blobs/ab/cdef...``, or *packed*, as a range of a pack that the logs point at.  A blob may have
several copies (gc copies live blobs out of a pack before deleting it; a blob may be both loose
and packed), and readers use the first sound one.  Later kinds (``Chunked``: a blob made of other
blobs) add a class here and a case where locations are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from ..backends.base import ObjectInfo
from ..errors import StoreError
from ..format import PackedBlob, blob_key, pack_key


@dataclass(frozen=True, slots=True)
class Loose:
    """A blob stored as an object of its own."""

    key: str

    def describe(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True)
class Packed:
    """``nbytes`` bytes at ``offset`` in the pack stored under ``pack`` (a key)."""

    pack: str
    offset: int
    nbytes: int

    @classmethod
    def of(cls, entry: PackedBlob) -> Packed:
        return cls(cached_pack_key(entry.pack), entry.offset, entry.nbytes)

    def describe(self) -> str:
        return f"{self.pack} at {self.offset}"


BlobLocation = Loose | Packed

#: ``layout.pack_key``, remembered: a store has few packs and many reads of small blobs.
cached_pack_key = lru_cache(maxsize=1 << 14)(pack_key)


def holds(info: ObjectInfo | None, place: Packed | PackedBlob) -> bool:
    """Whether a pack of this size holds the packed blob whole: the one test of it."""
    return info is not None and place.offset + place.nbytes <= info.size


@dataclass
class PackContents:
    """A pack and the places the logs give in it (whole or not; ``info`` is ``None`` when the
    logs name a pack that is gone)."""

    key: str
    info: ObjectInfo | None
    places: list[PackedBlob] = field(default_factory=list)
    sealed: bool = False

    def whole(self) -> Iterator[PackedBlob]:
        """The places this pack really holds."""
        return (p for p in self.places if holds(self.info, p))


@dataclass
class Reachable:
    """Every blob a store holds, where, and how large: what gc, verify and du walk.

    ``loose`` is listed (and stat'ed) before the logs are read again, so that a blob whose record
    was published meanwhile is seen with its record.
    """

    loose: dict[str, ObjectInfo]
    packs: dict[str, PackContents]
    #: Blob and pack entries that cannot be read (symlinks, special files), with the error.
    unreadable: dict[str, StoreError] = field(default_factory=dict)
    _packed: dict[str, list[Packed]] | None = None

    def digests(self, *, whole: bool = True) -> set[str]:
        """Every digest with at least one whole copy (or, ``whole=False``, with a place in a pack
        that exists, even one cut short: ``verify`` reports those as damaged, not missing)."""
        packs = [p for p in self.packs.values() if p.info is not None]
        packed = {p.blob for pack in packs for p in (pack.whole() if whole else pack.places)}
        return packed | set(self.loose)

    def copies(self, digest: str) -> list[BlobLocation]:
        """Every copy of a blob: its loose object, and each place in a pack that exists (whole
        or cut short: reading it says which)."""
        if self._packed is None:
            self._packed = {}
            for pack in self.packs.values():
                if pack.info is not None:
                    for p in pack.places:
                        self._packed.setdefault(p.blob, []).append(Packed.of(p))
        out: list[BlobLocation] = [Loose(blob_key(digest))] if digest in self.loose else []
        out.extend(self._packed.get(digest, ()))
        return out
