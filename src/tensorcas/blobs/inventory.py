"""The inventory of a store's blobs, for gc, verify and du: every copy, and what it holds.

Readers and writers ask :class:`~tensorcas.blobs.Blobs` about one digest; the whole-store tools
walk :meth:`Inventory.reachable_blobs` and read or hash one copy at a time, so that "which blobs
exist, where, and are they whole" is answered here only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..backends import base
from ..errors import CorruptObjectError, StoreError, UnsafeFileError
from ..format import BLOBS, PACKS, format_digest, is_pack_key, key_to_digest, pack_key
from ..hashing import new_hasher
from .locations import BlobLocation, PackContents, Packed, Reachable
from .packindex import PackIndex

#: Bytes read and hashed at a time by verify: its memory stays bounded by this, whatever the store.
HASH_CHUNK = 16 << 20


class Inventory:
    """Every blob of one store (``refresh`` reads what the logs added)."""

    def __init__(self, backend: base.Backend, packs: PackIndex, refresh: Callable[[], None], lock: threading.RLock) -> None:
        self.backend = backend
        self.packs = packs
        self._refresh = refresh
        self._lock = lock

    def reachable_blobs(self) -> Reachable:
        """Every blob stored: loose ones listed first, then the logs read, then every pack
        (existing, or named by the logs) with the places the logs give in it.  Entries that
        cannot be read (symlinks, special files) are kept apart in ``unreadable``."""
        loose: dict[str, base.ObjectInfo] = {}
        unreadable: dict[str, StoreError] = {}
        for key in self.backend.list(BLOBS):
            digest = key_to_digest(key)
            if digest is not None:
                info = self._stat(key, unreadable)
                if info is not None:  # collected meanwhile otherwise
                    loose[digest] = info
        self._refresh()
        packs = {}
        for key in sorted(self.backend.list(PACKS)):
            if is_pack_key(key):
                packs[key] = PackContents(key, self._stat(key, unreadable))
        with self._lock:
            sealed = {pack_key(p) for p in self.packs.sealed}
            for places in self.packs.all().values():
                for place in places:
                    key = pack_key(place.pack)
                    if key not in packs:
                        packs[key] = PackContents(key, None)
                    packs[key].places.append(place)
        for key, pack in packs.items():
            pack.sealed = key in sealed
        return Reachable(loose, packs, unreadable)

    def _stat(self, key: str, unreadable: dict[str, StoreError]) -> base.ObjectInfo | None:
        try:
            return self.backend.stat(key)
        except UnsafeFileError as exc:  # a symlink or special file: reported, never followed
            unreadable[key] = exc
            return None

    def read_copy(self, place: Packed) -> bytes:
        """The bytes of one packed copy; :class:`CorruptObjectError` if the pack does not hold it."""
        data = self.backend.read_range(place.pack, place.offset, place.nbytes)
        if data is None or len(data) != place.nbytes:
            got = "missing" if data is None else f"cut short ({len(data)} of {place.nbytes} bytes)"
            raise CorruptObjectError(f"the pack is {got}")
        return data

    def hash_copy(self, location: BlobLocation) -> tuple[str, int]:
        """The digest and size of one copy as it is stored; :class:`StoreError` if unreadable.

        Read and hashed ``HASH_CHUNK`` bytes at a time, so that memory stays bounded whatever
        size a file claims (a sparse file of a terabyte is a terabyte of zeros to hash, never in
        memory at once).  Reads rather than maps: a file truncated meanwhile by someone else ends
        the hash early (and fails it) instead of killing the process with SIGBUS."""
        if isinstance(location, Packed):
            info = self.backend.stat(location.pack)
            if info is None:
                raise CorruptObjectError("the pack is missing")
            if info.size < location.offset + location.nbytes:
                have = max(0, info.size - location.offset)
                raise CorruptObjectError(
                    f"the pack is cut short ({have} of {location.nbytes} bytes)"
                )
            digest, nbytes = self._hash_range(location.pack, location.offset, location.nbytes)
            if nbytes != location.nbytes:
                raise CorruptObjectError(
                    f"the pack is cut short ({nbytes} of {location.nbytes} bytes)"
                )
            return digest, nbytes
        info = self.backend.stat(location.key)  # also refuses symlinks and special files
        if info is None:
            raise CorruptObjectError("the file vanished while it was verified")
        return self._hash_range(location.key, 0, info.size)

    def _hash_range(self, key: str, offset: int, nbytes: int) -> tuple[str, int]:
        """The digest of up to ``nbytes`` bytes of an object from ``offset``, and how many
        there were."""
        hasher = new_hasher(nbytes)
        done = 0
        for piece in self.backend.read_chunks(key, offset, nbytes, HASH_CHUNK):
            hasher.update(piece)
            done += len(piece)
        return format_digest(hasher.hexdigest()), done
