"""The blob layer: the one place that turns a digest into keys or bytes.

Readers and writers ask it where a blob lives (:meth:`Blobs.locate`), for its bytes
(:meth:`Blobs.read_into`), to store new bytes (:meth:`Blobs.put`, :meth:`Blobs.put_streaming`),
whether bytes are stored already and so only need marking in use (:meth:`Blobs.reuse`).  gc,
verify and du walk the whole inventory (:attr:`Blobs.inventory`, ``inventory.py``) and collect
through :attr:`Blobs.collector` (``collector.py``).  It also holds the placement rule: small blobs
go into a writer's pack when the backend can append, others get an object of their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from ..backends import base
from ..errors import BlobLostError, BlobNotFoundError, CorruptObjectError
from ..format import (
    BLOBS,
    PackedBlob,
    blob_key,
    format_digest,
)
from ..hashing import OVERLAP_THRESHOLD, PieceHasher, hash_buffer, hash_while_writing, new_hasher
from .collector import Collector
from .inventory import Inventory
from .locations import BlobLocation, Loose, Packed, Reachable, cached_pack_key, holds
from .packindex import PackIndex, Place
from .windows import PackWindows

#: Pieces in which streamed blobs are hashed and written (small enough to stay in cache).
STREAM_CHUNK = 1 << 20

#: Storages smaller than this go into the writer's pack instead of getting an object each:
#: creating a file costs more than writing a few kilobytes, and tiny files waste disk blocks.
PACK_THRESHOLD = 64 << 10

#: Missing packs remembered by the one-read path of small blobs, at most (all forgotten past it).
_MAX_GONE = 4096

#: Checks a blob's bytes once read: ``None`` if they are sound, else what is wrong with them.
Check = Callable[[memoryview], str | None]

#: Packs a caller has looked at (``stat``) since a moment that matters to it, and what it saw.
PackLooks = dict[str, "base.ObjectInfo | None"]


class DigestCheck:
    """The check that bytes hash to ``digest`` (``verify=True``).  Unlike another check, the
    blob layer can also apply it to a read piece by piece as the pieces arrive
    (``hashing.PieceHasher``), so that hashing overlaps reading."""

    def __init__(self, digest: str) -> None:
        self.digest = digest

    def __call__(self, data: memoryview) -> str | None:
        return self.compare(hash_buffer(data))

    def compare(self, actual: str) -> str | None:
        return None if actual == self.digest else f"its bytes hash to {actual}"


def tensor_context(name: str | None) -> str:
    """How a message about a blob starts when a tensor's read needed it (``tensor 'name': ``),
    so that the user learns which tensor is lost; nothing when the blob was asked for by digest."""
    return f"tensor {name!r}: " if name is not None else ""


class Blobs:
    """The blobs of one store.

    ``refresh`` reads what the logs added since they were last read: a packed blob not found
    where the logs said may have been moved by gc, which says so in a log.
    """

    def __init__(self, backend: base.Backend, packs: PackIndex, refresh: Callable[[], None], lock: threading.RLock) -> None:
        self.backend = backend
        self.packs = packs
        self._refresh = refresh
        self._lock = lock
        self._grace = base.grace(backend)
        #: Whether small blobs can go into packs (the backend appends).
        self.can_pack = base.appending(backend) is not None
        #: Whether new bytes are written while they are hashed (``Staging``), rather than hashed
        #: first and put after (see :meth:`put_streaming`).
        self.stages = base.staging(backend) is not None
        #: The whole-store side: every copy, for gc, verify and du.
        self.inventory = Inventory(backend, packs, refresh, lock)
        #: gc's side: moving objects aside and deciding their fate.
        self.collector = Collector(backend)
        self._touched: dict[str, float] = {}
        #: Answers of :meth:`look_ahead`, each for one :meth:`find_stored` of the same thread:
        #: the writer that looked (writers sharing a store write on threads of their own).  A
        #: look made before another writer's record is no check after that record.
        self._looks = threading.local()
        #: Sealed packs read in order, a window at a time (``windows.py``).
        self._windows = PackWindows(backend.read_range)
        #: Packs a small read found missing: skipped by the one-read path (see ``_read_place``).
        self._gone: set[str] = set()

    @property
    def location(self) -> str:
        return self.backend.location

    # -- placement -----------------------------------------------------------------------------

    def packs_size(self, nbytes: int) -> bool:
        """Where bytes of this size go: into the writer's pack (``True``) or an object of their own."""
        return nbytes < PACK_THRESHOLD and self.can_pack

    # -- finding -------------------------------------------------------------------------------

    def locate(self, digest: str) -> tuple[BlobLocation, base.ObjectInfo] | None:
        """A whole copy of the blob and its size and mtime (a pack's mtime for a packed blob),
        or ``None``: its own object first, then the places the logs give (read again before
        giving up, since gc may have moved it)."""
        key = blob_key(digest)
        info = self.backend.stat(key)
        if info is not None:
            return Loose(key), info
        return self._find_packed(digest)

    def _find_packed(
        self, digest: str, nbytes: int | None = None, looked: PackLooks | None = None
    ) -> tuple[Packed, base.ObjectInfo] | None:
        """The first place a pack really holds the blob (of ``nbytes``, if given); the logs are
        read again before giving up, since gc may have moved it.  ``looked``: packs looked at
        already, by this caller, since the moment that matters to it (see :meth:`present`)."""
        for attempt in range(2):
            with self._lock:
                if attempt or digest not in self.packs:
                    self._refresh()
                places = self.packs.places(digest)
            for place in places:
                if nbytes is not None and place.nbytes != nbytes:
                    continue
                pack = Packed.of(place)
                if looked is None:
                    pack_info = self.backend.stat(pack.pack)
                else:
                    if pack.pack not in looked:
                        looked[pack.pack] = self.backend.stat(pack.pack)
                    pack_info = looked[pack.pack]
                if holds(pack_info, pack):
                    assert pack_info is not None
                    return pack, base.ObjectInfo(pack.nbytes, pack_info.mtime)
        return None

    def present(self, digest: str, nbytes: int, looked: PackLooks | None = None) -> bool:
        """Whether a whole copy of ``nbytes`` is stored right now (the logs are read again
        before saying no): in a pack first for a size this store packs, else as its own object
        first.  ``looked``: where a caller asks about many blobs after one moment (a batch of
        records appended), the packs looked at since, so that each is looked at once."""
        packed_first = self.packs_size(nbytes) and digest in self.packs
        if packed_first and self._find_packed(digest, nbytes, looked) is not None:
            return True
        info = self.backend.stat(blob_key(digest))
        if info is not None and info.size == nbytes:
            return True
        # (the packs were looked in already, the logs read again, where they came first)
        return not packed_first and self._find_packed(digest, nbytes, looked) is not None

    def check_size(self, digest: str, nbytes: int, *, name: str | None = None) -> BlobLocation:
        """Where the blob is, once found to hold exactly ``nbytes``; raise if missing or not."""
        found = self.locate(digest)
        self._check_size(digest, None if found is None else found[1].size, nbytes, name)
        assert found is not None
        return found[0]

    def _check_size(self, digest: str, size: int | None, nbytes: int, name: str | None) -> None:
        if size is None:
            if name is None:
                raise BlobNotFoundError(f"blob {digest} is not in store {self.location}")
            raise BlobLostError(
                f"tensor {name!r}: its blob {digest} is missing from store {self.location}; "
                "the store is damaged or was copied incompletely (run 'tensorcas verify')"
            )
        if size != nbytes:
            raise CorruptObjectError(
                f"{tensor_context(name)}blob {digest} holds {size} bytes but {nbytes} were stored "
                f"(truncated or extended); run 'tensorcas verify {self.location}'"
            )

    def local_path(self, digest: str) -> str | None:
        """A file holding exactly the blob, to memory-map, when the backend has files and the
        blob is loose; else ``None``."""
        paths = base.local_paths(self.backend)
        if paths is None:
            return None
        key = blob_key(digest)
        if digest in self.packs and not self.backend.exists(key):
            return None
        return paths.local_path(key)

    # -- reading -------------------------------------------------------------------------------

    def read_into(self, digest: str, out: memoryview, *, name: str | None = None, check: Check | None = None) -> None:
        """Fill ``out`` with the blob, which must hold exactly ``out.nbytes`` bytes.

        Each copy is tried in turn until one is whole and passes ``check``: the places the logs
        give in packs, then its own object, then the places of log entries added since (gc may
        have moved the blob).  Raises :class:`CorruptObjectError` (:class:`BlobNotFoundError` for
        a digest no tensor asked for) saying which copies were tried."""
        self.read_allocated(digest, out.nbytes, lambda: out, name=name, check=check)

    def read_allocated(
        self,
        digest: str,
        nbytes: int,
        allocate: Callable[[], memoryview],
        *,
        adopt: Callable[[memoryview], None] | None = None,
        name: str | None = None,
        check: Check | None = None,
    ) -> memoryview:
        """Like :meth:`read_into`, into the buffer of ``nbytes`` that ``allocate()`` returns,
        asked for only once a copy is found to hold ``nbytes`` (so a size a record claims costs
        no memory before the store confirms it); returns that buffer, filled.  A loose blob costs
        the backend's :meth:`~tensorcas.backends.base.Backend.read_whole`: one request on object
        storage.  ``adopt``: as in ``read_whole``, a buffer the backend made for the read and
        hands over instead of filling the one ``allocate`` gives."""
        made: list[memoryview] = []

        def target() -> memoryview:
            if not made:
                made.append(allocate())
            return made[0]

        def adopted(buffer: memoryview) -> None:
            assert adopt is not None and not made
            made.append(buffer)
            adopt(buffer)

        tried: list[str] = []
        damaged: str | None = None
        if digest in self.packs:
            found, damaged = self._read_packed(digest, nbytes, target, check, tried)
            if found:
                return target()
        key = blob_key(digest)
        hashed: str | None = None
        pieces = PieceHasher() if isinstance(check, DigestCheck) and nbytes >= OVERLAP_THRESHOLD else None
        try:
            size = self.backend.read_whole(
                key,
                nbytes,
                target,
                adopt=None if adopt is None else adopted,
                on_piece=None if pieces is None else pieces.feed,
            )
        finally:
            if pieces is not None:
                # Always waited for: the hashing thread may still be reading the buffer.
                whole = pieces.finish()
                hashed = whole if pieces.nbytes == nbytes else None
        if size is not None:
            tried.append(key)
            if size != nbytes and not made:
                self._check_size(digest, size, nbytes, name)  # raises: another size
            if size != nbytes:
                raise CorruptObjectError(
                    f"{tensor_context(name)}blob {digest} changed size while it was read "
                    f"({size} of {nbytes} bytes); run 'tensorcas verify {self.location}'"
                )
            if hashed is not None:
                assert isinstance(check, DigestCheck)
                damaged = check.compare(hashed)
            else:
                damaged = self._checked(target(), check)
            if damaged is None:
                return target()
        else:
            self._refresh()
            found, also_damaged = self._read_packed(digest, nbytes, target, check, tried)
            if found:
                return target()
            damaged = damaged or also_damaged
        if damaged is not None:
            raise CorruptObjectError(
                f"{tensor_context(name)}blob {digest} is damaged: {damaged}; "
                f"run 'tensorcas verify {self.location}' to find every damaged blob"
            )
        if not tried:
            self._check_size(digest, None, nbytes, name)  # raises: missing
        # Lost (a BlobLostError, also a FileNotFoundError) if no copy that should hold the blob
        # exists at all; damaged if one exists but is cut short, or the logs give another size.
        gone = size is None and all(
            e.nbytes == nbytes and not self.backend.exists(cached_pack_key(e.pack)) for e in self.packs.places(digest)
        )
        raise (BlobLostError if gone else CorruptObjectError)(
            f"{tensor_context(name)}blob {digest} of {nbytes} bytes is lost: "
            f"{', '.join(tried)} is missing, cut short or holds another size; "
            f"run 'tensorcas verify {self.location}'"
        )

    def _read_packed(
        self, digest: str, nbytes: int, target: Callable[[], memoryview], check: Check | None, tried: list[str]
    ) -> tuple[bool, str | None]:
        """Try each place the logs give that was not tried yet: (found, what was damaged)."""
        damaged = None
        with self._lock:
            places = self.packs.places(digest)
        for place in places:
            key = cached_pack_key(place.pack)
            where = f"{key} at {place.offset}"
            if place.nbytes != nbytes:
                # Not the blob the record describes: named in the message, never read, and never
                # in the way of a place of the right size at the same offset.
                other = f"{where} ({place.nbytes} bytes)"
                if other not in tried:
                    tried.append(other)
                continue
            if where in tried:
                continue
            tried.append(where)
            data = self.backend.read_range(key, place.offset, place.nbytes)
            if data is None or len(data) != place.nbytes:
                continue
            out = target()
            out[:] = data
            damaged = self._checked(out, check)
            if damaged is None:
                return True, None
        return False, damaged

    @staticmethod
    def _checked(out: memoryview, check: Check | None) -> str | None:
        return None if check is None else check(out)

    def read(self, digest: str, nbytes: int, *, name: str | None = None, check: Check | None = None) -> bytearray:
        """The blob's bytes (which must be ``nbytes``) in a new buffer."""
        if check is None:
            # The common case of a small tensor, in one read: its first place in a pack, whole
            # (or, once gc moved it, the first whole place of its copies).  Anything else (no
            # place, short reads, another size) takes the path that tries every copy, reads the
            # logs again and says what went wrong.
            place = self.packs.first(digest)
            if place is not None:
                data = self._read_place(place, nbytes)
                if data is None:
                    for place in self.packs.later(digest):
                        data = self._read_place(place, nbytes)
                        if data is not None:
                            break
                if data is not None:
                    return data
        out = bytearray(nbytes)
        self.read_into(digest, memoryview(out), name=name, check=check)
        return out

    def read_part(self, digest: str, nbytes: int, offset: int, length: int, *, name: str | None = None) -> bytearray:
        """``length`` bytes at ``offset`` of the blob (which must hold ``nbytes``), read alone: a
        view of a large blob costs its own bytes, one ranged request on object storage.  The
        copy is looked for in the order of a whole read: the places the logs give in packs (of
        ``nbytes``; one look at the pack, which must hold the whole blob), then its own object
        (one look at it: it must hold exactly ``nbytes``).  A copy that changes under the read
        (gc moved it) is looked for again once.  Where no sound copy is found, the blob is read
        whole after all, which tries every copy and fails exactly as a whole read does (the
        same error for the same damage, and no memory for a copy of another size).  Its bytes
        cannot be hashed against the digest: a reader that verifies reads whole blobs instead."""
        key = blob_key(digest)
        for _ in range(2):
            found = self._find_packed(digest, nbytes) if digest in self.packs else None
            if found is not None:
                where, start = found[0].pack, found[0].offset + offset
            else:
                info = self.backend.stat(key)
                if info is None or info.size != nbytes:
                    break
                where, start = key, offset
            data = self.backend.read_range(where, start, length)
            if data is not None and len(data) == length:
                return bytearray(data)
        # Memory for the whole blob only once a copy is found to hold it (as for a whole read).
        whole = self.read_allocated(digest, nbytes, lambda: memoryview(bytearray(nbytes)), name=name)
        return bytearray(whole[offset : offset + length])

    def _read_place(self, place: Place, nbytes: int) -> bytearray | None:
        """The ``nbytes`` at one packed place, whole, through a window where its pack is sealed;
        ``None`` if the place holds another size, or its pack is missing or cut short.  A pack
        found missing is not asked for again here (gc deleted it once it had copied what it
        held elsewhere); :meth:`read_into`, which tries every place, still does."""
        size, pack, offset = place
        if size != nbytes or pack in self._gone:
            return None
        key = cached_pack_key(pack)
        data: bytes | memoryview | None = None
        if pack in self.packs.sealed:
            data = self._windows.read(key, offset, nbytes)
        if data is None:
            data = self.backend.read_range(key, offset, nbytes)
            if data is None:
                if len(self._gone) >= _MAX_GONE:
                    self._gone.clear()
                self._gone.add(pack)
                return None
        return bytearray(data) if len(data) == nbytes else None

    # -- writing -------------------------------------------------------------------------------

    def reuse(self, digest: str, nbytes: int) -> bool:
        """Whether a whole blob of ``nbytes`` is stored already, where a writer of this size
        would look (the packs the logs give; its own object when this size is not packed).  If
        so, it is marked in use now, so that a concurrent gc keeps it (``Grace.touch``)."""
        return self.find_stored(digest, nbytes)[0]

    @property
    def _looked_ahead(self) -> dict[tuple[str, int], tuple[bool, base.ObjectInfo | None]]:
        """This thread's answers of :meth:`look_ahead` not used yet."""
        answers: dict[tuple[str, int], tuple[bool, base.ObjectInfo | None]] | None
        answers = getattr(self._looks, "answers", None)
        if answers is None:
            answers = self._looks.answers = {}
        return answers

    def look_ahead(self, wanted: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Where each look is a request (``parallel_reads``, object storage), look for several
        blobs of their own (``(digest, nbytes)``) at once, for a writer about to store them: its
        next :meth:`find_stored` of each is answered from that look, which came before its
        record as every look must (the check after the record is the one that counts).  Returns
        the pairs looked at, for :meth:`forget_looks` once the writer is done with them."""
        todo = [
            (digest, nbytes)
            for digest, nbytes in dict.fromkeys(wanted)
            if (digest, nbytes) not in self._looked_ahead and not self.packs_size(nbytes)
        ]
        workers = min(self.backend.parallel_reads, len(todo))
        if workers < 2:
            return []

        def look(item: tuple[str, int]) -> tuple[bool, base.ObjectInfo | None] | None:
            try:
                return self._find_stored_now(*item)
            except Exception:
                return None  # looked at again by ``find_stored``, which reports what fails

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tensorcas-look") as pool:
            answers = dict(zip(todo, pool.map(look, todo)))
        # Kept only once all came back (an interrupt leaves none for a later check to take),
        # for this thread (the looks ran on others).
        self._looked_ahead.update((item, found) for item, found in answers.items() if found is not None)
        return todo

    def forget_looks(self, looked: list[tuple[str, int]]) -> None:
        """Drop the answers of :meth:`look_ahead` that no :meth:`find_stored` used."""
        for item in looked:
            self._looked_ahead.pop(item, None)

    def find_stored(self, digest: str, nbytes: int) -> tuple[bool, base.ObjectInfo | None]:
        """``reuse``, with what was found at the blob's own key (``None`` where it was not
        looked at, or is absent): the one place where a writer finds bytes stored."""
        found = self._looked_ahead.pop((digest, nbytes), None)
        if found is not None:
            return found
        return self._find_stored_now(digest, nbytes)

    def _find_stored_now(self, digest: str, nbytes: int) -> tuple[bool, base.ObjectInfo | None]:
        if nbytes < PACK_THRESHOLD and digest in self.packs:  # only small blobs are packed
            for place in self.packs.places(digest):
                if place.nbytes == nbytes and self._touch_pack(Packed.of(place)):
                    return True, None
        if self.packs_size(nbytes):
            return False, None
        key = blob_key(digest)
        info = self.backend.stat(key)
        return info is not None and info.size == nbytes and self._touch(key), info

    def _touch(self, key: str) -> bool:
        return True if self._grace is None else self._grace.touch(key)

    def _touch_pack(self, place: Packed) -> bool:
        # Packs hold many blobs: touching one at most once a second is enough for gc's grace.
        # A pack touched (or appended to) within that second held its blobs then; packs only
        # grow until gc deletes them, and a writer checks after appending its record that the
        # blob is still there (``Placement.confirm``), so it is not looked at again before.
        now = time.monotonic()
        if now - self._touched.get(place.pack, -10.0) < 1.0:
            return True
        if not holds(self.backend.stat(place.pack), place):
            return False
        if not self._touch(place.pack):
            return False
        self._touched[place.pack] = now
        return True

    def note_packed(self, entry: PackedBlob) -> None:
        """Record a blob this process just packed (its log line is already appended)."""
        with self._lock:
            self.packs.add(entry)
        self._touched[cached_pack_key(entry.pack)] = time.monotonic()

    def put(
        self,
        digest: str,
        chunks: Iterable[memoryview],
        nbytes: int,
        *,
        again: Callable[[], Iterable[memoryview]] | None = None,
    ) -> bool:
        """Store the bytes ``chunks`` yields under ``digest`` (computed by the caller) as an object
        of its own (for sizes this store does not pack); ``False`` if they were stored already
        (then only marked in use).  A stored blob of the wrong size (damaged), or one that cannot
        be marked in use (a hard link: see ``LocalBackend.touch``), is replaced by this copy,
        which is fresh for gc.

        ``again`` (the same bytes once more) says the bytes are probably new: then no look comes
        before the put, whose condition (put-if-absent) finds a stored copy by itself.  Only when
        it refuses is the stored copy looked at, and replaced from ``again()`` if it is damaged
        or cannot be marked in use.  On object storage this saves a request per new blob, and
        costs a refused upload for bytes that were stored after all."""
        assert not self.packs_size(nbytes), "packed sizes go into the writer's pack"
        key = blob_key(digest)
        if again is not None:
            if self.backend.put_if_absent(key, chunks):
                return True
            chunks = again()
        found, info = self.find_stored(digest, nbytes)  # one look (one request on object storage)
        if found:
            return False
        self.backend.put_if_absent(key, chunks, overwrite=info is not None)
        return True

    def put_streaming(
        self,
        chunks: Callable[[], Iterable[memoryview]],
        nbytes: int,
        *,
        look_first: Callable[[str], bool] | None = None,
    ) -> tuple[str, bool]:
        """Hash and store bytes that must be fetched to be seen at all (a device storage copied to
        the host a piece at a time); return their digest, and whether they were new (``False``:
        stored already, the copy just written is discarded).

        With ``Staging``, the bytes are written to a temporary object while they are hashed (on
        two threads for large ones, see ``hashing.hash_while_writing``), and the object is
        published under its digest at the end: the source is read once.  Without it, the pieces
        are hashed first and fetched again to be put; ``look_first(digest)`` says whether to look
        for a stored copy before that put (the default) or to leave it to the put's condition
        (see :meth:`put`).  Storages that were probably stored before are hashed first instead
        (see ``placement``): unchanged bytes then skip the write.
        """
        staging = base.staging(self.backend)
        if staging is None:
            hasher = new_hasher(0)
            for chunk in chunks():
                hasher.update(chunk)
            digest = format_digest(hasher.hexdigest())
            look = look_first is None or look_first(digest)
            return digest, self.put(digest, chunks(), nbytes, again=None if look else chunks)
        with staging.stage(BLOBS) as staged:
            digest = hash_while_writing(chunks(), staged.write, nbytes)
            key = blob_key(digest)
            info = self.backend.stat(key)
            if info is not None and info.size == nbytes and self._touch(key):
                return digest, False  # stored already (the temporary is discarded)
            # Replaces a blob of the wrong size, or one that cannot be touched (a hard link).
            staged.publish(key, overwrite=info is not None)
        return digest, True

    def reachable_blobs(self) -> Reachable:
        """Every blob stored, where, and how large (see :class:`Inventory`)."""
        return self.inventory.reachable_blobs()
