"""``ContentStoreWriter``: put storages and named tensors into a store."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from types import TracebackType

import torch

from . import format as fmt
from .background import BackgroundQueue, snapshot
from .errors import StoreError
from .hashing import (
    check_storage,
    hash_and_copy_small,
    hash_buffer,
    hash_storage,
    iter_storage_chunks,
)
from .logwriter import LogWriter
from .store import Location, Store
from .tensors import check_tensor

#: How many storages' (pointer, size) a writer remembers as a hint (see ``_probably_stored``).
_SEEN_LIMIT = 4096


def _chunks(source: bytes | Iterable[memoryview]) -> Iterable[memoryview]:
    return [memoryview(source)] if isinstance(source, bytes) else source


def _close(queue: BackgroundQueue | None, log: LogWriter) -> None:
    try:
        if queue is not None:
            queue.close()
    finally:
        log.close()


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
        stable_hash: accepted for compatibility with ``torch.utils._content_store``; digests are
            always stable.
    """

    def __init__(
        self,
        loc: Location,
        *,
        durable: bool = False,
        background: bool = False,
        max_pending_bytes: int = 1 << 30,
        stable_hash: bool = True,
    ) -> None:
        del stable_hash
        self.store = Store.open(loc, create=True, durable=durable)
        self._log = self.store.open_log()
        self._queue = BackgroundQueue(max_pending_bytes) if background else None
        self._finalizer = weakref.finalize(self, _close, self._queue, self._log)
        self._closed = False
        self._index_read = False
        #: (data pointer, size) of storages written lately: a hint that the bytes may be unchanged.
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()

    @property
    def location(self) -> str:
        return self.store.location

    def write_storage(self, storage: torch.UntypedStorage) -> str:
        """Store a storage's bytes (if not stored yet) and return their ``blake3:`` digest.

        Always synchronous (the digest is the result); in background mode it first waits for
        pending writes, so records keep their order."""
        self._check_open()
        self.flush()
        digest, small = self._place(storage, None)
        if small is not None:
            self._log.put_packed(digest, small)
        return digest

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

    # -- where bytes go: one path ---------------------------------------------------------------

    def _write_tensor(self, name: str, tensor: torch.Tensor) -> fmt.TensorRecord:
        digest, small = self._place(tensor.untyped_storage(), name)
        record = self._record(name, tensor, digest)
        self._log.put(record, small)
        return record

    def _place(self, storage: torch.UntypedStorage, name: str | None) -> tuple[str, bytes | None]:
        """Hash a storage and store its bytes where they go (see :meth:`_commit`).  Returns the
        digest, and the bytes when they are to be packed with their record."""
        check_storage(storage)
        nbytes = storage.nbytes()
        self._read_index_once()
        if self.store.blobs.packs_size(nbytes):
            if storage.device.type == "cpu":
                digest, data = hash_and_copy_small(storage)
            else:
                data = b"".join(bytes(chunk) for chunk in iter_storage_chunks(storage))
                digest = hash_buffer(data)
            return digest, self._commit(digest, nbytes, lambda: data)
        if storage.device.type == "cpu" or self._probably_stored(storage, name):
            # Hash first: if the bytes are unchanged, nothing is written at all.
            digest = hash_storage(storage)
            return digest, self._commit(digest, nbytes, lambda: iter_storage_chunks(storage))
        # A device storage that is probably new: copy it to the host once, hashing and writing
        # each piece.
        return self.store.blobs.put_streaming(lambda: iter_storage_chunks(storage), nbytes), None

    def _commit(self, digest: str, nbytes: int, source: Callable[[], bytes | Iterable[memoryview]]) -> bytes | None:
        """The one placement decision for bytes of a known digest: nowhere if they are stored
        already (only marked in use, for gc's grace); into this writer's pack, returned to go in
        the same log write as their record, if small; else an object of their own."""
        blobs = self.store.blobs
        if blobs.packs_size(nbytes):
            if blobs.reuse(digest, nbytes):
                return None
            data = source()
            return data if isinstance(data, bytes) else b"".join(bytes(c) for c in data)
        blobs.put(digest, _chunks(source()), nbytes)  # only marks them in use if stored
        return None

    def _probably_stored(self, storage: torch.UntypedStorage, name: str | None) -> bool:
        """Whether a device storage's bytes were likely stored before (the same storage was
        written by this writer recently, or ``name`` already holds a blob of this size).  Only a
        guess that picks the faster path; the digest decides what is stored."""
        key = (storage.data_ptr(), storage.nbytes())
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        self._seen[key] = None
        if len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        previous = self.store.log.peek(name) if name is not None else None
        return previous is not None and previous.nbytes == key[1]

    # -- background mode: decides only when ---------------------------------------------------

    def _submit(self, name: str, tensor: torch.Tensor) -> None:
        """Background mode: decide now what the bytes are, store them later through the same path.

        A CPU storage is hashed at once: if its blob is stored already (an unchanged weight),
        only the record is left to write and nothing is copied.  Otherwise the storage is copied
        (the caller may change it as soon as this returns), unless it is larger than
        ``max_pending_bytes``: then it is written now, without a copy.  A small storage is
        written at once when nothing is queued (a queued job costs more than the write).
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
            view = snapshot(tensor)
            queue.submit(nbytes, lambda: self._write_tensor(name, view()))
            return
        if self.store.blobs.packs_size(nbytes):
            if queue.idle:
                self._write_tensor(name, tensor)
                return
            digest, data = hash_and_copy_small(storage)  # copied while hashed
            source: Callable[[], bytes | Iterable[memoryview]] = lambda: data  # noqa: E731
        else:
            digest = hash_storage(storage)
            self._read_index_once()
            if self.store.blobs.reuse(digest, nbytes):
                record = self._record(name, tensor, digest)
                queue.submit(0, lambda: self._log.put(record))
                return
            copy = snapshot(tensor)  # the bytes just hashed: the job need not hash them again
            source = lambda: iter_storage_chunks(copy().untyped_storage())  # noqa: E731
        record = self._record(name, tensor, digest)

        def store() -> None:
            self._read_index_once()
            self._log.put(record, self._commit(digest, nbytes, source))

        queue.submit(nbytes, store)

    def _read_index_once(self) -> None:
        if not self._index_read:
            self.store.refresh()  # learn what earlier writers stored, once
            self._index_read = True

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

    def flush(self) -> None:
        """Wait until every background write is stored; raise the first failure among them."""
        if self._queue is not None:
            self._queue.flush()

    def delete_tensor(self, name: str) -> None:
        """Remove ``name`` from the store (its blob stays until gc finds it unreferenced)."""
        self._check_open()
        self.flush()
        self._log.delete(name)  # raises TensorNotFoundError if there is no such tensor

    def close(self) -> None:
        """Flush pending background writes and close the log; raises a failed write's error."""
        self._closed = True
        self._finalizer()

    def _check_open(self) -> None:
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
