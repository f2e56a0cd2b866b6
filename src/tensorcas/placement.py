"""Where a writer's bytes go: one decision, on one synchronous path.

For each storage a writer is given, :meth:`Placement.storage` hashes it and decides:

* stored already (in a pack the logs name, or as an object of its own): nothing is written, the
  copy is only marked in use (``Blobs.reuse``), so that a concurrent gc's grace keeps it;
* small, on a backend that appends: the bytes go into the writer's pack, in the same log write as
  the record that uses them (:attr:`Placed.packed`);
* otherwise: an object of its own, published before the record.

After the record is appended, :meth:`Placement.confirm` checks that bytes not packed with it are
still stored, and stores them again if a concurrent gc collected them meanwhile (gc moves a blob
aside, reads the logs again and deletes it only if no record uses it then; a record appended after
that second read sees its blob gone here).  So a write that returns has its blob, whatever gc's
grace period.  Background writing decides only *when* this runs (``writer``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from ._meanwhile import meanwhile
from .blobs import PackLooks
from .errors import StoreError
from .hashing import (
    OVERLAP_THRESHOLD,
    check_storage,
    cpu_storage_view,
    hash_and_copy_small,
    hash_buffer,
    hash_storage,
    iter_storage_chunks,
    new_hasher,
)
from .logwriter import LogWriter
from .store import Store

#: Bytes, or pieces of them in order.  A source is called each time its bytes are needed.
Source = Callable[[], bytes | Iterable[memoryview]]

#: How many storages' (pointer, size) a writer remembers as a hint (see ``_probably_stored``).
_SEEN_LIMIT = 4096


@dataclass(slots=True)
class Placed:
    """A storage's bytes, stored or about to be: ``packed`` holds them when they go into the
    writer's pack with their record; ``source`` gives them again if they must be stored again."""

    digest: str
    nbytes: int
    packed: bytes | None
    source: Source


def _chunks(data: bytes | Iterable[memoryview]) -> Iterable[memoryview]:
    return [memoryview(data)] if isinstance(data, bytes) else data


def _joined(data: bytes | Iterable[memoryview]) -> bytes:
    return data if isinstance(data, bytes) else b"".join(bytes(c) for c in data)


class Placement:
    """The placement policy of one writer."""

    def __init__(self, store: Store, log: LogWriter) -> None:
        self.store = store
        self.blobs = store.blobs
        self.log = log
        self._index_read = False
        #: The store's refreshes so far: one finished after this writer began is as good as its own.
        self._refreshes_at_start = store.log.refreshes
        #: (data pointer, size) of storages written lately: a hint that the bytes may be unchanged.
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        #: For this writer's last large storages: whether each was stored already.
        self._stored_lately: deque[bool] = deque(maxlen=8)
        #: Digests the logs name (records and roots), read from the index when first needed, and
        #: those of the large storages this writer placed (see :meth:`named`).
        self._named: set[str] | None = None
        self._placed: set[str] = set()
        self._log_opening = False
        #: The hints are kept by a background writer's worker and asked by its caller.
        self._hints_lock = threading.Lock()

    def read_index_once(self) -> None:
        """Learn what earlier writers stored, once (a writer's first write)."""
        if not self._index_read:
            if self.store.created:
                # A store this writer's opening created holds no logs but those of writers that
                # started since: what they stored is found when needed, as any later writer's.
                with self._hints_lock:
                    self._named = set()
            elif self.blobs.stages:
                if self.store.log.refreshes == self._refreshes_at_start:
                    self.store.refresh()
            else:
                # Where new bytes are hashed first and put after, the digests the logs name decide
                # which puts look first (:meth:`named`): gathered with the same one reading.
                named = self.store.log.referenced_blobs()
                with self._hints_lock:
                    self._named = named
            self._index_read = True

    def storage(self, storage: torch.UntypedStorage, name: str | None, *, guess: bool = True) -> Placed:
        """Hash a storage and store its bytes where they go.

        ``guess=False``: the caller has decided with :meth:`hash_first` already (a background
        copy of a storage that was probably new)."""
        check_storage(storage)
        nbytes = storage.nbytes()
        self.read_index_once()
        if self.blobs.packs_size(nbytes):
            if storage.device.type == "cpu":
                digest, data = hash_and_copy_small(storage)
            else:
                data = b"".join(bytes(chunk) for chunk in iter_storage_chunks(storage))
                digest = hash_buffer(data)
            return self.known(digest, nbytes, lambda: data)

        def source() -> Iterable[memoryview]:
            if storage.device.type == "cpu":
                # One view of the storage's own memory, in a list: a backend may send it as it
                # is, where pieces a generator yields may share a buffer and must be copied.
                return [cpu_storage_view(storage)]
            return iter_storage_chunks(storage)

        small_cpu = storage.device.type == "cpu" and nbytes < OVERLAP_THRESHOLD
        if small_cpu or (guess and self.hash_first(storage, name)):
            # Hash first: if the bytes are unchanged, nothing is written at all.
            return self.known(hash_storage(storage), nbytes, source)
        # Probably new: write while hashing (a device storage is copied to the host once); if the
        # bytes turn out to be stored already, the written copy is discarded.  Where they are
        # hashed first and then put, only a digest the logs name is looked for before the put.
        self._open_log_meanwhile()
        digest, new = self.blobs.put_streaming(source, nbytes, look_first=self.named)
        self._note_stored(not new)
        self._note_named(digest)
        return Placed(digest, nbytes, None, source)

    def hash_first(self, storage: torch.UntypedStorage, name: str | None) -> bool:
        """Whether a large storage's bytes are probably stored already, so that hashing them
        first (and writing nothing if they are) beats writing them while they are hashed."""
        return self._probably_stored(storage, name) or self._mostly_stored_lately()

    def _note_stored(self, stored: bool) -> None:
        with self._hints_lock:
            self._stored_lately.append(stored)

    def _mostly_stored_lately(self) -> bool:
        """Whether most of this writer's last large storages turned out to be stored already (a
        checkpoint of mostly unchanged weights under new names): then hashing first pays, since
        it skips their writes; a run of new storages goes back to writing while hashing."""
        with self._hints_lock:
            lately = self._stored_lately
            return bool(lately) and 2 * sum(lately) >= len(lately)

    def known(self, digest: str, nbytes: int, source: Source) -> Placed:
        """The decision for bytes whose digest is known (see the module's docstring)."""
        self.read_index_once()
        if self.blobs.packs_size(nbytes):
            packed = None if self.blobs.reuse(digest, nbytes) else _joined(source())
            return Placed(digest, nbytes, packed, source)
        self._open_log_meanwhile()
        new = self.blobs.put(digest, _chunks(source()), nbytes)  # only marks them in use if stored
        if nbytes >= OVERLAP_THRESHOLD:
            self._note_stored(not new)
        self._note_named(digest)
        return Placed(digest, nbytes, None, source)

    def _open_log_meanwhile(self) -> None:
        """Before this writer's first large blob is stored where that is requests to a service
        (no ``Staging``), create its log on a thread of its own meanwhile (``LogWriter.prepare``),
        so that the creation costs no time of its own."""
        with self._hints_lock:
            if self._log_opening or self.blobs.stages:
                return
            self._log_opening = True
        meanwhile(self.log.prepare)

    def named(self, digest: str) -> bool:
        """Whether a record or root the logs held when first asked (or this writer) names the
        digest: then its bytes are likely stored, and are looked for before they are sent.  A
        digest named by no one is put at once: the put's condition refuses bytes stored after all
        (``Blobs.put``), so a wrong answer costs bytes sent, never a wrong store."""
        with self._hints_lock:
            known = self._named
            if digest in self._placed:
                return True
        if known is None:
            known = self.store.log.referenced_blobs()  # once per writer, where new bytes are put
            with self._hints_lock:
                if self._named is None:
                    self._named = known
                known = self._named
        return digest in known

    def _note_named(self, digest: str) -> None:
        with self._hints_lock:
            self._placed.add(digest)

    def confirm(self, placed: Placed, looked: PackLooks | None = None) -> bool:
        """After the record that uses ``placed`` is appended: make sure its bytes are stored;
        ``True`` if they had to be stored again.  ``looked``: for a batch of records appended
        before any of them is confirmed, the packs looked at since the last append (each is
        looked at once per batch)."""
        if placed.packed is not None or self.blobs.present(placed.digest, placed.nbytes, looked):
            return False
        hasher = new_hasher(placed.nbytes)
        for chunk in _chunks(placed.source()):
            hasher.update(chunk)
        if f"blake3:{hasher.hexdigest()}" != placed.digest:
            raise StoreError(
                f"blob {placed.digest} was collected by a concurrent gc of {self.store.location} while "
                "this write was pending, and the tensor's bytes changed since; write the tensor again"
            )
        if self.blobs.packs_size(placed.nbytes):
            self.log.put_packed(placed.digest, _joined(placed.source()))
        else:
            self.blobs.put(placed.digest, _chunks(placed.source()), placed.nbytes)
        return True

    def _probably_stored(self, storage: torch.UntypedStorage, name: str | None) -> bool:
        """Whether a storage's bytes were likely stored before (the same storage was written by
        this writer recently, or ``name`` already holds a blob of this size).  Only a guess that
        picks the faster path (hash first, so that unchanged bytes are not written); the digest
        decides what is stored."""
        key = (storage.data_ptr(), storage.nbytes())
        with self._hints_lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return True
            self._seen[key] = None
            if len(self._seen) > _SEEN_LIMIT:
                self._seen.popitem(last=False)
        previous = self.store.log.peek(name) if name is not None else None
        return previous is not None and previous.nbytes == key[1]
