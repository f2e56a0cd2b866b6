"""``ContentStoreWriter``: put storages and named tensors into a store."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from types import TracebackType

import torch

from . import format as fmt
from .background import BackgroundQueue, snapshot
from .errors import BlobNotFoundError, StoreError
from .hashing import (
    check_storage,
    hash_and_copy_small,
    hash_buffer,
    hash_storage,
    iter_storage_chunks,
)
from .reader import TorchMetadata
from .store import PACK_THRESHOLD, Location, LogWriter, Store
from .tensors import check_tensor


def _alias_form(alias: str) -> str:
    """``torch:<hex>`` for a bare hex digest (PyTorch's ``hash_storage``), else as given."""
    return alias if ":" in alias else f"torch:{alias}"


def _changed_meanwhile(digest: str, location: str) -> StoreError:
    return StoreError(
        f"blob {digest} was collected by a concurrent gc of {location} while this write was pending, "
        "and the tensor's bytes changed since; write the tensor again"
    )


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
        self.store = Store.open(loc, create=True, durable=durable)
        self._log = self.store.open_log()
        self._queue = BackgroundQueue(max_pending_bytes) if background else None
        self._finalizer = weakref.finalize(self, _close, self._queue, self._log)
        self._closed = False
        self._index_read = False
        #: (data pointer, size) of storages written before: a hint that the bytes may be unchanged.
        self._seen: set[tuple[int, int]] = set()

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
        digest, small, new = self._put_storage(storage, None)
        self._log.root(digest, storage.nbytes(), aliases, small if new else None)
        if not new:
            self._ensure_stored(
                digest,
                storage.nbytes(),
                (lambda: small) if small is not None else (lambda: storage),
            )
        return digest

    def remove_root(self, digest: str) -> None:
        """Stop keeping a blob written with :meth:`write_storage`: gc may then collect it once no
        tensor uses it.  ``TensorNotFoundError`` if it is not a root."""
        self._check_open()
        digest = fmt.format_digest(fmt.parse_digest(digest))
        self.flush()
        if digest not in self.store.roots():
            raise BlobNotFoundError(
                f"blob {digest} is not a storage root of store {self.location}; list them with 'tensorcas ls --roots'"
            )
        self._log.unroot(digest)

    def _ensure_stored(
        self, digest: str, nbytes: int, source: Callable[[], torch.UntypedStorage | bytes]
    ) -> None:
        """After a record that uses a blob stored before is appended: check the blob is still
        there, and store it again if a concurrent gc collected it meanwhile.

        gc moves a blob aside, reads the logs again, and deletes the blob only if no record uses
        it then; a record appended after that second read is seen here, as the blob missing.
        So a write that returns has its blob, for any grace period, without trusting clocks.
        """
        if self.store.blob_present(digest, nbytes):
            return
        data = source()
        if isinstance(data, bytes):
            if hash_buffer(data) != digest:
                raise _changed_meanwhile(digest, self.location)
            self._log.put_packed(digest, data)
            return
        if hash_storage(data) != digest:
            raise _changed_meanwhile(digest, self.location)
        if nbytes < PACK_THRESHOLD:
            self._log.put_packed(
                digest, b"".join(bytes(chunk) for chunk in iter_storage_chunks(data))
            )
        else:
            self.store.put_blob(digest, iter_storage_chunks(data), nbytes)

    def _put_storage(
        self, storage: torch.UntypedStorage, name: str | None
    ) -> tuple[str, bytes | None, bool]:
        """Hash the storage and store it if it is new: ``(digest, small, new)``.

        A small storage is returned as bytes (``small``) and not stored yet: if it is ``new`` it
        goes into this writer's pack, in the same log write as its record."""
        check_storage(storage)
        nbytes = storage.nbytes()
        self._read_index_once()
        if nbytes < PACK_THRESHOLD:
            if storage.device.type == "cpu":
                digest, data = hash_and_copy_small(storage)
            else:
                data = b"".join(bytes(chunk) for chunk in iter_storage_chunks(storage))
                digest = hash_buffer(data)
            return digest, data, not self.store.keep_packed(digest, nbytes)
        if storage.device.type == "cpu" or self._probably_stored(storage, name):
            # Hash first: if the bytes are unchanged, nothing is written at all.
            digest = hash_storage(storage)
            self.store.put_blob(digest, iter_storage_chunks(storage), nbytes)  # no-op if stored
        else:
            # A device storage that is probably new: copy it to the host once, hashing and
            # writing each chunk.
            digest = self.store.put_blob_streaming(iter_storage_chunks(storage), nbytes)
        return digest, None, False

    def _probably_stored(self, storage: torch.UntypedStorage, name: str | None) -> bool:
        """Whether a device storage's bytes were likely stored before (the same storage was
        written by this writer, or ``name`` already holds a blob of this size).  Only a guess that
        picks the faster path; the digest decides what is stored."""
        key = (storage.data_ptr(), storage.nbytes())
        if key in self._seen:
            return True
        self._seen.add(key)
        previous = self.store.peek_record(name) if name is not None else None
        return previous is not None and previous.nbytes == key[1]

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

    def _submit(self, name: str, tensor: torch.Tensor) -> None:
        """Background mode: decide now what the bytes are, store them later.

        A large CPU storage is hashed at once: if its blob is stored already (an unchanged
        weight), only the record is left to write and nothing is copied.  Otherwise the storage
        is copied (the caller may change it as soon as this returns), unless it is larger than
        ``max_pending_bytes``: then it is written now, without a copy.
        """
        storage = tensor.untyped_storage()
        nbytes = storage.nbytes()
        assert self._queue is not None
        if nbytes > self._queue.max_pending_bytes:
            self._queue.flush()
            self._write_tensor(name, tensor)
            return
        if nbytes < PACK_THRESHOLD and storage.device.type == "cpu":
            # Small: a queued job costs more than the write.  Write now when nothing is queued
            # (order is kept), else queue the bytes, copied while they are hashed.
            if self._queue.idle:
                self._write_tensor(name, tensor)
                return
            digest, data = hash_and_copy_small(storage)
            record = self._record(name, tensor, digest)
            self._queue.submit(nbytes, lambda: self._put_small(record, data))
            return
        if storage.device.type == "cpu":
            digest = hash_storage(storage)
            record = self._record(name, tensor, digest)
            if self.store.keep_blob(digest, nbytes):

                def put_record() -> None:
                    self._log.put(record)
                    self._ensure_stored(digest, nbytes, lambda: storage)

                self._queue.submit(0, put_record)
                return
            copy = snapshot(tensor)  # the bytes just hashed: the job need not hash them again

            def store_copy() -> None:
                source = copy().untyped_storage()
                self.store.put_blob(digest, iter_storage_chunks(source), nbytes)
                self._log.put(record)
                self._ensure_stored(digest, nbytes, lambda: source)

            self._queue.submit(nbytes, store_copy)
            return
        view = snapshot(tensor)
        self._queue.submit(nbytes, lambda: self._write_tensor(name, view()))

    def _put_small(self, record: fmt.TensorRecord, data: bytes) -> None:
        self._read_index_once()
        known = self.store.keep_packed(record.blob, record.nbytes)
        self._log.put(record, None if known else data)
        if known:
            self._ensure_stored(record.blob, record.nbytes, lambda: data)

    def _read_index_once(self) -> None:
        if not self._index_read:
            self.store.refresh()  # learn what earlier writers stored, once
            self._index_read = True

    def _write_tensor(self, name: str, tensor: torch.Tensor) -> fmt.TensorRecord:
        storage = tensor.untyped_storage()
        digest, small, new = self._put_storage(storage, name)
        record = self._record(name, tensor, digest)
        self._log.put(record, small if new else None)
        if not new:
            self._ensure_stored(
                digest, record.nbytes, (lambda: small) if small is not None else (lambda: storage)
            )
        return record

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
            raise StoreError(
                f"this writer for {self.location} is closed; open a new ContentStoreWriter"
            )

    def __enter__(self) -> ContentStoreWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ContentStoreWriter({self.location!r})"
