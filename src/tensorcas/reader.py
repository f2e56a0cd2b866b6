"""``ContentStoreReader``: named tensors and storages back out of a store."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Iterator
from typing import Any, cast

import torch

from . import format as fmt
from ._memory import empty_cpu_storage
from .blobs import PACK_THRESHOLD, DigestCheck, tensor_context
from .errors import (
    BlobLostError,
    BlobNotFoundError,
    InvalidDigestError,
    ResourceLimitError,
    StoreError,
    StoreIOError,
)
from .hashing import cpu_storage_view
from .store import Location, Store
from .tensors import record_to_tensor

DeviceLike = torch.device | str | int | None


#: PyTorch's tensor metadata tuple: (dtype, storage hash, storage offset, shape, stride, extra).
TorchMetadata = tuple[torch.dtype, str, int, tuple[int, ...], tuple[int, ...], dict[str, bool]]

_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(fmt.TensorRecord))


class TensorMetadata(fmt.TensorRecord):
    """A :class:`TensorRecord` that also unpacks, indexes and compares like the tuple PyTorch's
    ``read_tensor_metadata`` returns: ``(dtype, hash, storage_offset, shape, stride, metadata)``.

    Code written for ``torch.utils._content_store`` (``dtype, h, *_ = reader.read_tensor_metadata(n)``,
    or PyTorch's repro ``analyze`` comparing it with ``compute_tensor_metadata`` item by item)
    keeps working.  ``hash`` is the blob's ``blake3:`` digest; ``metadata`` is always ``{}``, since
    lazy conjugate and negative bits are resolved when a tensor is written.
    """

    def as_tuple(self) -> TorchMetadata:
        return (self.torch_dtype, self.blob, self.offset, self.shape, self.stride, {})

    def __iter__(self) -> Iterator[Any]:
        return iter(self.as_tuple())

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int | slice) -> Any:
        return self.as_tuple()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, tuple):
            return self.as_tuple() == other
        if isinstance(other, fmt.TensorRecord):
            return all(getattr(self, f) == getattr(other, f) for f in _RECORD_FIELDS)
        return NotImplemented

    __hash__ = fmt.TensorRecord.__hash__

    @classmethod
    def of(cls, record: fmt.TensorRecord) -> TensorMetadata:
        return cls(**{f: getattr(record, f) for f in _RECORD_FIELDS})


class ContentStoreReader:
    """Reads a store; nothing read is unpickled, and everything is validated before torch sees it.

    Args:
        loc: a directory, ``memory://`` or a backend; the store must exist.
        cache: tensors whose records name the same blob share one ``UntypedStorage`` per device,
            as long as any of them is alive (a weak cache).  Without it every read is a new storage.
            Shared means shared: an in-place change to one returned tensor shows in the others,
            and a storage served from the cache was verified when it was first read.
        verify: re-hash every blob as it is read and raise :class:`CorruptObjectError` on any
            mismatch.  A blob's size is always checked, verified or not.
        mmap: map blobs of a local store into memory (copy-on-write) instead of reading them:
            opening and reading one tensor costs what that tensor touches, not the store's size.
            Do not use on stores that another process may damage while they are mapped.
    """

    def __init__(self, loc: Location, *, cache: bool = True, verify: bool = False, mmap: bool = False) -> None:
        self._set_up(Store.open(loc, read_only=True, refresh=True), cache=cache, verify=verify, mmap=mmap)

    def _set_up(self, store: Store, *, cache: bool, verify: bool, mmap: bool) -> None:
        self.store = store
        self.verify = verify
        self.mmap = mmap
        self._cache: weakref.WeakValueDictionary[str | tuple[str, str], torch.UntypedStorage] | None = (
            weakref.WeakValueDictionary() if cache else None
        )

    @classmethod
    def sharing(cls, store: Store, *, cache: bool = True, verify: bool = False, mmap: bool = False) -> ContentStoreReader:
        """A reader over a store already open (a writer's ``store``): its records, read once,
        serve both; the reader sees what was appended since on :meth:`refresh`."""
        reader = cls.__new__(cls)
        reader._set_up(store, cache=cache, verify=verify, mmap=mmap)
        return reader

    @property
    def location(self) -> str:
        return self.store.location

    def list_tensors(self, prefix: str = "") -> list[str]:
        """Names under ``prefix`` (``''`` for all), in the order they were written."""
        return self.store.names(prefix)

    def __contains__(self, name: str) -> bool:
        return name in self.store

    def refresh(self) -> None:
        """Read what writers appended since this reader opened (or last refreshed).

        A reader answers from the records it has read: those there when it opened, plus, read
        again on demand, any name it did not know yet (and every name on ``list_tensors``).  A
        name rewritten since then keeps its earlier value until ``refresh()`` (PyTorch's store
        reads the file each time); the reasons are in docs/pytorch.md."""
        self.store.refresh()

    def read_tensor_metadata(self, name: str) -> TensorMetadata:
        """The validated record of ``name``: dtype, shape, stride, offset, blob and its size.

        It also unpacks like PyTorch's ``(dtype, hash, storage_offset, shape, stride, metadata)``
        (see :class:`TensorMetadata`)."""
        return TensorMetadata.of(self.store.get_record(name))

    def read_tensor(self, name: str, *, device: DeviceLike = None, whole_storage: bool = True) -> torch.Tensor:
        """The tensor stored under ``name``, on ``device`` (CPU by default).

        ``whole_storage=False`` reads only the bytes the tensor's view covers, into a storage of
        its own: one row of a large embedding table on object storage costs that row, not the
        table.  Such a tensor shares memory with no other tensor read, and its storage is not
        the whole one that was written (``untyped_storage()`` is smaller, the storage offset is
        0).  With ``verify=True``, or where the view covers the whole blob, the whole storage
        is read as usual."""
        record = self.store.get_record(name)
        where = _device(device)
        if not whole_storage:
            part = self._view_only(record, where, name)
            if part is not None:
                return part
        if where == _CPU:
            tensor = self._small_tensor(record, name)
            if tensor is not None:
                return tensor
        storage = self._storage(record.blob, record.nbytes, where, name)
        return record_to_tensor(record, storage, storage.device if where.type != "cpu" else _CPU)

    def _view_only(self, record: fmt.TensorRecord, device: torch.device, name: str) -> torch.Tensor | None:
        """``read_tensor(whole_storage=False)``: the view over a storage of only its own bytes;
        ``None`` where the whole blob is read instead (verifying, or nothing to leave out)."""
        if self.verify:
            return None  # a part of a blob cannot be checked against the blob's digest
        start = record.offset * fmt.itemsize(record.dtype)
        end = max(start, fmt.required_nbytes(record.dtype, record.shape, record.stride, record.offset))
        if start == 0 and end == record.nbytes:
            return None
        data = self.store.blobs.read_part(record.blob, record.nbytes, start, end - start, name=name) if end > start else None
        storage = torch.UntypedStorage(0) if data is None else torch.frombuffer(data, dtype=torch.uint8).untyped_storage()
        if device.type != "cpu":
            storage = _onto_device(storage, device, record.blob, end - start, name)
        tensor = torch.empty(0, dtype=record.torch_dtype, device=storage.device)
        tensor.set_(storage, 0, record.shape, record.stride)
        if record.requires_grad:
            tensor.requires_grad_(True)
        return tensor

    def _small_tensor(self, record: fmt.TensorRecord, name: str) -> torch.Tensor | None:
        """A small tensor on the CPU whose storage is not in the cache, made straight over the
        bytes read (``torch.frombuffer`` in its dtype, and ``set_`` only for a view that is not
        the whole storage in one dimension): the most common read of all, at about half the
        cost of making a storage and then a tensor over it.  ``None`` for anything else."""
        nbytes, dtype = record.nbytes, record.dtype
        size = fmt.itemsize(dtype)
        if not 0 < nbytes < PACK_THRESHOLD or nbytes % size or self.verify or self.mmap:
            return None
        cache = self._cache
        if cache is not None and record.blob in cache:
            return None  # shared with the tensors read before: made over the cached storage
        data = self.store.blobs.read(record.blob, nbytes, name=name)
        tensor = torch.frombuffer(data, dtype=fmt.torch_dtype(dtype))
        if record.offset or record.stride != (1,) or record.shape != (nbytes // size,):
            tensor.set_(tensor.untyped_storage(), record.offset, record.shape, record.stride)
        if cache is not None:
            cache[record.blob] = tensor.untyped_storage()
        if record.requires_grad:
            tensor.requires_grad_(True)
        return tensor

    def read_storage(self, digest: str, *, device: DeviceLike = None) -> torch.UntypedStorage:
        """The blob stored under ``digest`` as an ``UntypedStorage``.

        ``digest`` is ``blake3:<hex>`` or its bare 64 hex digits, or a foreign digest the bytes
        were written with (``write_storage(..., alias=...)``, ``tensorcas import`` of a PyTorch
        store): PyTorch's ``hash_storage`` hex, bare or as ``torch:<hex>``.  An unknown foreign
        digest is a missing blob (``BlobNotFoundError``)."""
        digest = self._resolve_digest(digest)
        found = self.store.blobs.locate(digest)
        if found is None:
            raise self._missing(digest)
        return self._storage(digest, found[1].size, _device(device), None)

    def _missing(self, digest: str) -> BlobNotFoundError:
        """The error for a blob that is not there: *lost* if the store says it holds it (a pack,
        a tensor or a storage root names it), else simply not in this store.  Only on this
        error path are the records searched."""
        packs = sorted({fmt.pack_key(p.pack) for p in self.store.blobs.packs.places(digest)})
        users = [r.name for r in self.store.records() if r.blob == digest]
        if packs:
            why = f"the logs place it in {', '.join(packs)}, which is missing or cut short"
        elif users:
            more = f" and {len(users) - 1} more" if len(users) > 1 else ""
            why = f"tensor {users[0]!r}{more} use(s) it, but its file is missing"
        elif digest in self.store.roots():
            why = "it was written with write_storage (a storage root), but its file is missing"
        else:
            return BlobNotFoundError(
                f"blob {digest} is not in store {self.location}; list what it holds with "
                f"'tensorcas ls {self.location}' (a digest from another store is not found here)"
            )
        return BlobLostError(
            f"blob {digest} is lost from store {self.location}: {why}; "
            f"run 'tensorcas verify {self.location}'"
        )

    def _resolve_digest(self, digest: str) -> str:
        try:
            return fmt.format_digest(fmt.parse_digest(digest))  # bare hex is accepted too
        except InvalidDigestError:
            if not isinstance(digest, str) or digest.startswith(fmt.DIGEST_ALGORITHM + ":"):
                raise
            alias = digest if ":" in digest else f"torch:{digest}"
            try:
                fmt.validate_alias(alias)
            except InvalidDigestError:
                raise InvalidDigestError(
                    f"{digest!r} is not a digest; expected 'blake3:' followed by 64 lowercase hex digits, "
                    "or a foreign digest such as PyTorch's hex 'hash_storage'"
                ) from None
            found = self.store.resolve_alias(alias)
            if found is None:
                raise BlobNotFoundError(
                    f"blob {digest} is not in store {self.location}: no storage was written under that "
                    "digest (foreign digests are kept by write_storage(alias=...) and 'tensorcas import')"
                ) from None
            return found

    def _storage(self, digest: str, nbytes: int, device: torch.device, name: str | None) -> torch.UntypedStorage:
        key = digest if device == _CPU else (digest, str(device))
        if self._cache is not None:
            cached = self._cache.get(key)
            # Only a storage of the size this record was validated against may serve it: torch
            # would silently grow a smaller one to fit a (hostile) larger view.
            if cached is not None and cached.nbytes() == nbytes:
                return cached
        try:
            storage = self._load(digest, nbytes, name)
        except MemoryError:
            raise _too_large(digest, nbytes, name, "out of memory") from None
        except RuntimeError as exc:  # torch's allocation failures
            if not _is_allocation_failure(exc):
                raise
            raise _too_large(digest, nbytes, name, _first_line(exc)) from None
        if device.type != "cpu":
            storage = _onto_device(storage, device, digest, nbytes, name)
        if self._cache is not None:
            self._cache[key] = storage
        return storage

    def _load(self, digest: str, nbytes: int, name: str | None) -> torch.UntypedStorage:
        blobs = self.store.blobs
        check = DigestCheck(digest) if self.verify else None
        path = blobs.local_path(digest) if self.mmap and nbytes > 0 else None
        if path is not None:
            blobs.check_size(digest, nbytes, name=name)
            try:
                mapped = torch.UntypedStorage.from_file(path, shared=False, nbytes=nbytes)
            except RuntimeError as exc:
                if _is_allocation_failure(exc):
                    raise
                raise StoreIOError(
                    f"{tensor_context(name)}cannot map blob {digest} ({_first_line(exc)}); "
                    f"run 'tensorcas verify {self.location}'"
                ) from None
            storage = cast(torch.UntypedStorage, mapped)
            problem = None if check is None else check(cpu_storage_view(storage))
            if problem is None:
                return storage
            # The mapped file is damaged; another copy (in a pack) may be sound.
        if 0 < nbytes < PACK_THRESHOLD:
            # Small (often packed): one read, wrapped without another copy.
            data = blobs.read(digest, nbytes, name=name, check=check)
            return torch.frombuffer(data, dtype=torch.uint8).untyped_storage()
        # A record may claim any size up to 2**63: the storage is allocated only once a copy of
        # the blob is found to hold that many bytes (on object storage, by the read's own answer),
        # or is made over the buffer the backend read it into for this read alone.
        made: list[torch.UntypedStorage] = []

        def allocate() -> memoryview:
            made.append(empty_cpu_storage(nbytes))
            return cpu_storage_view(made[0])

        def adopt(buffer: memoryview) -> None:
            made.append(torch.frombuffer(buffer, dtype=torch.uint8).untyped_storage())

        blobs.read_allocated(digest, nbytes, allocate, adopt=adopt, name=name, check=check)
        return made[0]

    def __repr__(self) -> str:
        return f"ContentStoreReader({self.location!r})"


def _onto_device(
    storage: torch.UntypedStorage, device: torch.device, digest: str, nbytes: int, name: str | None
) -> torch.UntypedStorage:
    """``storage`` (on the CPU) copied onto ``device``; a device this torch build lacks, or has
    no memory left on, is a :class:`StoreError` that says so, never torch's bare assertion."""
    try:
        return torch.empty(0, dtype=torch.uint8).set_(storage).to(device).untyped_storage()
    except MemoryError:
        raise _too_large(digest, nbytes, name, "out of memory") from None
    except (AssertionError, RuntimeError) as exc:  # torch asserts when a backend is absent
        if isinstance(exc, RuntimeError) and _is_allocation_failure(exc):
            raise _too_large(digest, nbytes, name, _first_line(exc)) from None
        raise StoreError(
            f"{tensor_context(name)}blob {digest} cannot be read onto device {device}: "
            f"{str(exc) or type(exc).__name__}; read it onto the CPU (device=None) or use a "
            "torch build with that device"
        ) from exc


def _is_allocation_failure(exc: RuntimeError) -> bool:
    """Whether torch failed to allocate or map memory (it has no exception type of its own for
    host memory, only these messages; ``OutOfMemoryError`` for devices)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    message = str(exc)
    return any(
        hint in message
        for hint in (
            "can't allocate memory",
            "Cannot allocate memory",
            "out of memory",
            "Error code 12",
        )
    )


def _too_large(digest: str, nbytes: int, name: str | None, reason: str) -> ResourceLimitError:
    return ResourceLimitError(
        f"{tensor_context(name)}blob {digest} is {nbytes} bytes, more than this process can allocate "
        f"or map ({reason}); read it where more memory is free, or check the record with "
        "'tensorcas show' and the store with 'tensorcas verify'"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__


_CPU = torch.device("cpu")


def _device(device: DeviceLike) -> torch.device:
    if device is None:
        return _CPU
    try:
        return torch.device(device)
    except RuntimeError as exc:  # an index names the current accelerator, which may be absent
        raise StoreError(
            f"cannot read onto device {device!r}: {_first_line(exc)}; read onto the CPU (device=None) "
            "or name a device this torch build has"
        ) from exc
