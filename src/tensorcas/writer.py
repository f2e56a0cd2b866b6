"""``ContentStoreWriter``: put storages and named tensors into a store."""

from __future__ import annotations

import weakref
from types import TracebackType

import torch

from . import format as fmt
from .hashing import check_storage, hash_and_copy_small, hash_buffer, hash_storage, iter_storage_chunks
from .store import PACK_THRESHOLD, Location, Store
from .tensors import check_tensor


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
        stable_hash: accepted for compatibility with ``torch.utils._content_store``; digests are
            always stable.
    """

    def __init__(self, loc: Location, *, durable: bool = False, stable_hash: bool = True) -> None:
        del stable_hash
        self.store = Store.open(loc, create=True, durable=durable)
        self._log = self.store.open_log()
        self._finalizer = weakref.finalize(self, self._log.close)
        self._index_read = False

    @property
    def location(self) -> str:
        return self.store.location

    def write_storage(self, storage: torch.UntypedStorage) -> str:
        """Store a storage's bytes (if not stored yet) and return their ``blake3:`` digest."""
        digest, small = self._put_storage(storage)
        if small is not None:
            self._log.put_packed(digest, small)
        return digest

    def _put_storage(self, storage: torch.UntypedStorage) -> tuple[str, bytes | None]:
        """Hash the storage and store it if it is new.  A new small storage is returned as bytes
        instead: it goes into this writer's pack, in the same log write as its record."""
        check_storage(storage)
        nbytes = storage.nbytes()
        if nbytes < PACK_THRESHOLD:
            if storage.device.type == "cpu":
                digest, data = hash_and_copy_small(storage)
            else:
                data = b"".join(bytes(chunk) for chunk in iter_storage_chunks(storage))
                digest = hash_buffer(data)
            if not self._index_read:
                self.store.refresh()  # learn what earlier writers packed, once
                self._index_read = True
            if self.store.keep_packed(digest, nbytes):
                return digest, None
            return digest, data
        digest = hash_storage(storage)
        if not self.store.keep_blob(digest, nbytes):
            self.store.put_blob(digest, iter_storage_chunks(storage), nbytes)
        return digest, None

    def write_tensor(self, name: str, tensor: torch.Tensor) -> fmt.TensorRecord:
        """Store ``tensor`` under ``name`` (replacing an earlier tensor of that name).

        The record keeps dtype, shape, stride, storage offset and ``requires_grad``, so tensors
        that were views of one storage are views of one storage again when read back.
        """
        fmt.validate_name(name)
        tensor = check_tensor(name, tensor)
        storage = tensor.untyped_storage()
        digest, small = self._put_storage(storage)
        record = fmt.make_record(
            name,
            tensor.dtype,
            tuple(tensor.shape),
            tuple(tensor.stride()),
            tensor.storage_offset(),
            tensor.requires_grad,
            digest,
            storage.nbytes(),
        )
        self._log.put(record, small)
        return record

    def delete_tensor(self, name: str) -> None:
        """Remove ``name`` from the store (its blob stays until gc finds it unreferenced)."""
        self.store.get_record(name)  # raises TensorNotFoundError with a clear message
        self._log.delete(name)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> ContentStoreWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ContentStoreWriter({self.location!r})"
