"""``ContentStoreWriter``: put storages and named tensors into a store."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import torch

from . import format as fmt
from .background import BackgroundQueue, snapshot
from .blobs import PackLooks
from .errors import BlobNotFoundError, StoreError
from .hashing import (
    OVERLAP_THRESHOLD,
    HashAhead,
    hash_and_copy_small,
    hash_storage,
    iter_storage_chunks,
)
from .logwriter import LogWriter
from .placement import Placed, Placement, Source
from .reader import TorchMetadata
from .store import Location, Store
from .tensors import check_tensor


def _alias_form(alias: str) -> str:
    """``torch:<hex>`` for a bare hex digest (PyTorch's ``hash_storage``), else as given."""
    return alias if ":" in alias else f"torch:{alias}"


def _close(queue: BackgroundQueue | None, log: LogWriter) -> None:
    try:
        # A forked child has none of the worker's threads: the writes queued before the fork
        # are the parent's, and waiting for them there would never end.
        if queue is not None and not log.inherited:
            queue.close()
    finally:
        log.close()


#: How far ``write_tensors`` hashes ahead while the bytes prove to be stored already: enough
#: to keep the hashing threads busy while each record is written.
HASH_AHEAD_BYTES = 64 << 20
#: How far it hashes ahead at first, while the store's logs are read: less, since the bytes may
#: prove to be new (see ``HashAhead``).
START_AHEAD_BYTES = 16 << 20


def _chunks_of(storage: torch.UntypedStorage) -> Source:
    return lambda: iter_storage_chunks(storage)


class ContentStoreWriter:
    """Writes storages once per content and tensors as named records.

    Opening an existing store appends to it; a new location is created.  Each writer appends its
    records to a log of its own, so any number of writers (threads or processes) may share a store.
    Every write hashes the bytes as they are at that moment, so a mutation that torch's version
    counter does not see (``x.data.add_(1)``) is still stored as new content.  A ``write_tensor``
    that returned is visible to readers and survives the writer being killed; with
    ``durable=True`` it also survives power loss (each publish is fsynced).

    Args:
        loc: a directory, ``memory://``, or a :class:`tensorcas.backends.Backend`.
        durable: fsync blobs, records and directories before a write returns.
        background: return from ``write_tensor`` at once, after copying the tensor's storage; a
            worker thread hashes and writes it.  ``flush()`` waits for pending writes and raises
            the first failure; ``close()`` flushes.  In this mode ``write_tensor`` returns ``None``.
        max_pending_bytes: in background mode, the most bytes of copies waiting to be written;
            a storage larger than this is written at once, without a copy.
        stable_hash: accepted (also positionally, as PyTorch's ``ContentStoreWriter(loc, True)``)
            for compatibility with ``torch.utils._content_store``; digests are always stable.
    """

    def __init__(
        self,
        loc: Location,
        stable_hash: bool = True,
        *,
        durable: bool = False,
        background: bool = False,
        max_pending_bytes: int = 1 << 30,
    ) -> None:
        del stable_hash
        self._set_up(Store.open(loc, create=True, durable=durable), background, max_pending_bytes)

    @classmethod
    def sharing(cls, store: Store) -> ContentStoreWriter:
        """A writer on a store already open (another writer's ``store``, kept open between
        saves): the records and blob locations it has read serve this writer too, which reads
        only what was appended since.  It appends to a log of its own, as every writer does."""
        writer = cls.__new__(cls)
        writer._set_up(store, False, 0)
        return writer

    def _set_up(self, store: Store, background: bool, max_pending_bytes: int) -> None:
        self.store = store
        self._log = self.store.open_log()
        self._queue = BackgroundQueue(max_pending_bytes) if background else None
        self._finalizer = weakref.finalize(self, _close, self._queue, self._log)
        self._place = Placement(self.store, self._log)
        self._closed = False

    @property
    def location(self) -> str:
        return self.store.location

    def write_storage(self, storage: torch.UntypedStorage, *, alias: str | None = None) -> str:
        """Store a storage's bytes (if not stored yet) as a *root* and return their ``blake3:``
        digest.

        A root is kept by gc although no tensor name references it (PyTorch's repro tooling
        saves its inputs this way and names them only in a generated script), until it is
        removed on purpose with :meth:`remove_root` or ``tensorcas rm --root``.  ``alias`` is
        another digest the same bytes are known by, such as PyTorch's ``hash_storage`` hex
        digest: readers then find the bytes under it too (``read_storage(alias)``).

        Always synchronous (the digest is the result); in background mode it first waits for
        pending writes, so records keep their order."""
        self._check_open()
        aliases = () if alias is None else (fmt.validate_alias(_alias_form(alias)),)
        self.flush()
        placed = self._place.storage(storage, None)
        self._log.root(placed.digest, placed.nbytes, aliases, placed.packed)
        self._place.confirm(placed)
        return placed.digest

    def remove_root(self, digest: str) -> None:
        """Stop keeping a blob written with :meth:`write_storage`: gc may then collect it once no
        tensor uses it.  ``BlobNotFoundError`` if it is not a root."""
        self._check_open()
        digest = fmt.format_digest(fmt.parse_digest(digest))
        self.flush()
        if digest not in self.store.roots():
            raise BlobNotFoundError(
                f"blob {digest} is not a storage root of store {self.location}; list them with 'tensorcas ls --roots'"
            )
        self._log.unroot(digest)

    def write_tensor(self, name: str, tensor: torch.Tensor) -> fmt.TensorRecord | None:
        """Store ``tensor`` under ``name`` (replacing an earlier tensor of that name).

        The record keeps dtype, shape, stride, storage offset and ``requires_grad``, so tensors
        that were views of one storage are views of one storage again when read back.  Returns the
        record, or ``None`` in background mode (the write happens later; see ``flush``).
        """
        self._check_open()
        fmt.validate_name(name)
        tensor = check_tensor(name, tensor)
        if self._queue is not None:
            self._submit(name, tensor)
            return None
        return self._write_tensor(name, tensor)

    def write_tensors(
        self,
        items: Sequence[tuple[str, torch.Tensor]],
        *,
        before_writing: Callable[[], object] | None = None,
    ) -> list[fmt.TensorRecord] | None:
        """Store each ``(name, tensor)`` as :meth:`write_tensor` would, in order; return the records.

        Faster for many large CPU tensors (a checkpoint's weights): their storages are hashed on
        another thread, ahead, while this one stores the bytes already hashed (nothing when they
        are stored already, as unchanged weights are) and appends their records, so saving
        mostly unchanged tensors costs little more than hashing them.  Every name and tensor is
        checked before anything is written.  ``before_writing`` is called once the hashing has
        begun and before anything is written: a caller's last check (that a checkpoint does not
        exist yet) runs while the first storages are hashed, and an error it raises ends the
        call with nothing written.  In background mode each tensor is submitted as by
        ``write_tensor`` (after ``before_writing``), and the result is ``None``.
        """
        self._check_open()
        checked = [(fmt.validate_name(name), check_tensor(name, tensor)) for name, tensor in items]
        if self._queue is not None:
            if before_writing is not None:
                before_writing()
            for name, tensor in checked:
                self._submit(name, tensor)
            return None
        # Large CPU storages, each once, in the order they are needed.
        ahead: dict[tuple[int, int], int] = {}
        storages: list[torch.UntypedStorage] = []
        for _, tensor in checked:
            storage = tensor.untyped_storage()
            nbytes = storage.nbytes()
            key = (storage.data_ptr(), nbytes)
            if (
                storage.device.type == "cpu"
                and nbytes >= OVERLAP_THRESHOLD
                and not self.store.blobs.packs_size(nbytes)
                and key not in ahead
            ):
                ahead[key] = len(storages)
                storages.append(storage)
        hashes = HashAhead(storages, START_AHEAD_BYTES)
        try:
            if before_writing is not None:
                before_writing()
            # (also while the first storages are hashed; where ``before_writing`` has just read
            # the logs, they are not read again)
            self._place.read_index_once()
            records = []
            # Each blob is confirmed after its record is appended, as by ``_put``, but all of
            # them after the last append: a pack that holds many of them is looked at once.
            appended: list[Placed] = []
            look_ahead = self.store.backend.parallel_reads > 1
            looked: list[tuple[str, int]] = []  # blobs looked for ahead, dropped before the checks
            try:
                for name, tensor in checked:
                    storage = tensor.untyped_storage()
                    index = ahead.get((storage.data_ptr(), storage.nbytes()))
                    if index is None:
                        placed = self._place.storage(storage, name)
                    else:
                        # Hash far ahead while the bytes prove to be stored (unchanged weights);
                        # else not at all: bytes probably new are hashed while they are written.
                        hash_first = self._place.hash_first(storage, name)
                        if not hashes.submitted(index) and (not hash_first or hashes.passed(index)):
                            placed = self._place.storage(storage, name, guess=hash_first)
                        else:
                            digest = hashes.digest(index, HASH_AHEAD_BYTES if hash_first else 0)
                            if look_ahead and hash_first:
                                # Object storage: the looks for this blob and the next ones
                                # hashed already go out together, one round trip for them all.
                                ready = [(digest, storage.nbytes())] + [
                                    (d, storages[j].nbytes()) for j, d in hashes.ready(index)
                                ]
                                looked += self.store.blobs.look_ahead(ready)
                            placed = self._place.known(digest, storage.nbytes(), _chunks_of(storage))
                    record = self._record(name, tensor, placed.digest)
                    self._log.put(record, placed.packed)
                    appended.append(placed)
                    records.append(record)
            except BaseException:
                # The records appended so far are in the store: their blobs are confirmed even
                # so, and the error that stopped the batch is the one raised.  (Looks ahead not
                # taken yet are dropped first: a check after a record looks now.)
                self.store.blobs.forget_looks(looked)
                with contextlib.suppress(Exception):
                    self._confirm_all(appended)
                raise
            self.store.blobs.forget_looks(looked)
            self._confirm_all(appended)
            return records
        finally:
            hashes.close()

    def _confirm_all(self, appended: list[Placed]) -> None:
        """Confirm every appended record's blob; the first error is raised after the last one
        (a blob that cannot be stored again must not leave the records after it unchecked)."""
        looked: PackLooks = {}
        first: Exception | None = None
        for placed, stored in zip(appended, self._stored_at_once(appended)):
            if stored:
                continue
            try:
                if self._place.confirm(placed, looked):
                    looked.clear()  # stored again: a pack may have grown since it was looked at
            except Exception as exc:
                looked.clear()  # (a failed store may have appended to a pack too)
                if first is None:
                    first = exc
        if first is not None:
            raise first

    def _stored_at_once(self, appended: list[Placed]) -> list[bool]:
        """Where each look is a request (object storage: ``parallel_reads``), whether each blob
        of a batch is still stored, asked at once: all after the batch's last record, as the
        checks must be.  ``False`` where unknown (or looked at one by one): ``confirm`` asks."""
        blobs = self.store.blobs
        loose = sum(1 for placed in appended if not blobs.packs_size(placed.nbytes))
        workers = min(self.store.backend.parallel_reads, loose)
        if workers <= 1:
            return [False] * len(appended)

        def stored(placed: Placed) -> bool:
            if placed.packed is not None:
                return True
            if blobs.packs_size(placed.nbytes):
                return False  # packed: one look per pack, by ``confirm`` (``PackLooks``)
            try:
                return blobs.present(placed.digest, placed.nbytes)
            except Exception:
                return False  # asked again by ``confirm``, which reports what fails

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tensorcas-confirm") as pool:
            return list(pool.map(stored, appended))

    def _write_tensor(self, name: str, tensor: torch.Tensor, *, guess: bool = True) -> fmt.TensorRecord:
        """The one synchronous path: bytes placed (``placement``), then the record appended."""
        placed = self._place.storage(tensor.untyped_storage(), name, guess=guess)
        record = self._record(name, tensor, placed.digest)
        self._put(record, placed)
        return record

    def _put(self, record: fmt.TensorRecord, placed: Placed) -> None:
        self._log.put(record, placed.packed)
        self._place.confirm(placed)

    def _submit(self, name: str, tensor: torch.Tensor) -> None:
        """Background mode: decide now what the bytes are and when to store them; store them
        later through the same path.

        A large CPU storage that was probably stored already (``Placement.hash_first``: an
        unchanged weight) is hashed at once: if its blob is stored, only the record is left to
        write and nothing is copied.  Other storages are copied (the caller may change them as
        soon as this returns), and the worker hashes the copy while it writes it; one larger than
        ``max_pending_bytes`` is written now, without a copy.  A small storage is written at once
        when nothing is queued (a queued job costs more than the write).
        """
        queue = self._queue
        assert queue is not None
        storage = tensor.untyped_storage()
        nbytes = storage.nbytes()
        if nbytes > queue.max_pending_bytes:
            queue.flush()
            self._write_tensor(name, tensor)
            return
        if storage.device.type != "cpu":
            view = self._copy_when_room(queue, nbytes, tensor)
            queue.start(nbytes, lambda: self._write_tensor(name, view()))
            return
        blobs = self.store.blobs
        if blobs.packs_size(nbytes):
            if queue.idle:
                self._write_tensor(name, tensor)
                return
            digest, data = hash_and_copy_small(storage)  # copied while hashed
            source: Source = lambda: data  # noqa: E731
        else:
            self._place.read_index_once()
            if nbytes >= OVERLAP_THRESHOLD and not self._place.hash_first(storage, name):
                fresh = self._copy_when_room(queue, nbytes, tensor)
                queue.start(nbytes, lambda: self._write_tensor(name, fresh(), guess=False))
                return
            digest = hash_storage(storage)
            if blobs.reuse(digest, nbytes):  # stored already: no copy, only the record
                record = self._record(name, tensor, digest)
                placed = Placed(digest, nbytes, None, lambda: iter_storage_chunks(storage))
                queue.submit(0, lambda: self._put(record, placed))
                return
            record = self._record(name, tensor, digest)
            # The bytes just hashed: the job need not hash them again.
            copy = self._copy_when_room(queue, nbytes, tensor)
            large: Source = lambda: iter_storage_chunks(copy().untyped_storage())  # noqa: E731
            queue.start(nbytes, lambda: self._put(record, self._place.known(digest, nbytes, large)))
            return
        record = self._record(name, tensor, digest)
        queue.submit(nbytes, lambda: self._put(record, self._place.known(digest, nbytes, source)))

    @staticmethod
    def _copy_when_room(queue: BackgroundQueue, nbytes: int, tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
        """Copy the tensor's storage once its bytes fit under ``max_pending_bytes`` (reserved
        for the job the caller starts next), so that copies waiting to be written stay bounded."""
        queue.reserve(nbytes)
        try:
            return snapshot(tensor)
        except BaseException:
            queue.release(nbytes)
            raise

    def _record(self, name: str, tensor: torch.Tensor, digest: str) -> fmt.TensorRecord:
        return fmt.make_record(
            name,
            tensor.dtype,
            tuple(tensor.shape),
            tuple(tensor.stride()),
            int(tensor.storage_offset()),
            tensor.requires_grad,
            digest,
            tensor.untyped_storage().nbytes(),
        )

    def compute_tensor_metadata(self, t: torch.Tensor, h: str | None = None) -> TorchMetadata:
        """What ``read_tensor_metadata`` would return for ``t`` written now, as PyTorch's tuple
        ``(dtype, hash, storage_offset, shape, stride, metadata)``; writes nothing.

        ``h`` is the storage's digest if the caller has it.  Lazy conjugate and negative views
        are resolved first (as ``write_tensor`` stores them), so ``metadata`` is ``{}``.
        """
        tensor = check_tensor("<metadata>", t)
        if h is None:
            h = hash_storage(tensor.untyped_storage())
        return (
            tensor.dtype,
            h,
            int(tensor.storage_offset()),
            tuple(tensor.shape),
            tuple(tensor.stride()),
            {},
        )

    def flush(self) -> None:
        """Wait until every background write is stored; raise the first failure among them."""
        if self._queue is not None:
            self._log.check_process()  # (a forked child would wait for the parent's writes)
            self._queue.flush()

    def seal_packs(self) -> None:
        """Wait for background writes, then seal the packs written so far: small blobs stored
        from now on go into a new pack.  gc rewrites only sealed packs, so a writer kept open
        between saves seals after each save, and the small blobs of checkpoints removed since
        can be collected while it stays open."""
        self._check_open()
        self.flush()
        self._log.seal_packs()

    def delete_tensor(self, name: str) -> None:
        """Remove ``name`` from the store (its blob stays until gc finds it unreferenced)."""
        self._check_open()
        self.flush()
        self._log.delete(name)  # raises TensorNotFoundError if there is no such tensor

    def delete_tensors(self, names: Iterable[str]) -> None:
        """Remove every name, as :meth:`delete_tensor` would one by one, but reading the logs
        once: ``TensorNotFoundError`` (and nothing removed) if one of them is not there, and
        ``InvalidNameError`` for a bare str (its letters are not the names meant)."""
        self._check_open()
        self.flush()
        self._log.delete_many(names)

    def close(self) -> None:
        """Flush pending background writes and close the log; raises a failed write's error."""
        self._closed = True
        self._finalizer()

    def _check_open(self) -> None:
        self._log.check_process()  # a forked child stores nothing with its parent's writer
        if self._closed:
            raise StoreError(f"this writer for {self.location} is closed; open a new ContentStoreWriter")

    def __enter__(self) -> ContentStoreWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ContentStoreWriter({self.location!r})"
