"""``ContentStoreReader``: named tensors and storages back out of a store."""

from __future__ import annotations

import weakref
from typing import cast

import torch

from . import format as fmt
from .blobs import PACK_THRESHOLD, Check
from .errors import BlobNotFoundError, InvalidDigestError
from .hashing import cpu_storage_view, hash_buffer
from .store import Location, Store
from .tensors import record_to_tensor

DeviceLike = torch.device | str | int | None

#: Blobs at least this large have their size checked before memory is allocated for them.
_CHECK_BEFORE_ALLOCATING = 1 << 20


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
        self.store = Store.open(loc, read_only=True)
        self.store.refresh()
        self.verify = verify
        self.mmap = mmap
        self._cache: weakref.WeakValueDictionary[tuple[str, str], torch.UntypedStorage] | None = (
            weakref.WeakValueDictionary() if cache else None
        )

    @property
    def location(self) -> str:
        return self.store.location

    def list_tensors(self, prefix: str = "") -> list[str]:
        """Names under ``prefix`` (``''`` for all), in the order they were written."""
        return self.store.names(prefix)

    def __contains__(self, name: str) -> bool:
        return name in self.store

    def read_tensor_metadata(self, name: str) -> fmt.TensorRecord:
        """The validated record of ``name``: dtype, shape, stride, offset, blob and its size."""
        return self.store.get_record(name)

    def read_tensor(self, name: str, *, device: DeviceLike = None) -> torch.Tensor:
        """The tensor stored under ``name``, on ``device`` (CPU by default)."""
        record = self.store.get_record(name)
        storage = self._storage(record.blob, record.nbytes, _device(device), name)
        return record_to_tensor(record, storage)

    def read_storage(self, digest: str, *, device: DeviceLike = None) -> torch.UntypedStorage:
        """The blob stored under ``digest`` as an ``UntypedStorage``.

        ``digest`` is ``blake3:<hex>`` or its bare 64 hex digits, or a foreign digest the bytes
        were written with (``write_storage(..., alias=...)``, ``tensorcas import`` of a PyTorch
        store): PyTorch's ``hash_storage`` hex, bare or as ``torch:<hex>``.  An unknown foreign
        digest is a missing blob (``BlobNotFoundError``)."""
        digest = self._resolve_digest(digest)
        found = self.store.blobs.locate(digest)
        nbytes = found[1].size if found is not None else 0
        return self._storage(digest, nbytes, _device(device), None)

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
        key = (digest, str(device))
        if self._cache is not None:
            cached = self._cache.get(key)
            # Only a storage of the size this record was validated against may serve it: torch
            # would silently grow a smaller one to fit a (hostile) larger view.
            if cached is not None and cached.nbytes() == nbytes:
                return cached
        storage = self._load(digest, nbytes, name)
        if device.type != "cpu":
            storage = torch.empty(0, dtype=torch.uint8).set_(storage).to(device).untyped_storage()
        if self._cache is not None:
            self._cache[key] = storage
        return storage

    def _load(self, digest: str, nbytes: int, name: str | None) -> torch.UntypedStorage:
        blobs = self.store.blobs
        check = _hash_check(digest) if self.verify else None
        path = blobs.local_path(digest) if self.mmap and nbytes > 0 else None
        if path is not None:
            blobs.check_size(digest, nbytes, name=name)
            storage = cast(torch.UntypedStorage, torch.UntypedStorage.from_file(path, shared=False, nbytes=nbytes))
            problem = None if check is None else check(cpu_storage_view(storage))
            if problem is None:
                return storage
            # The mapped file is damaged; another copy (in a pack) may be sound.
        if 0 < nbytes < PACK_THRESHOLD:
            # Small (often packed): one read, wrapped without another copy.
            data = blobs.read(digest, nbytes, name=name, check=check)
            return torch.frombuffer(data, dtype=torch.uint8).untyped_storage()
        if nbytes >= _CHECK_BEFORE_ALLOCATING:
            # A record may claim any size up to 2**63: compare it with the blob's true size
            # before allocating, not after (read_into checks small blobs as it reads).
            blobs.check_size(digest, nbytes, name=name)
        storage = torch.UntypedStorage(nbytes)
        blobs.read_into(digest, cpu_storage_view(storage), name=name, check=check)
        return storage

    def __repr__(self) -> str:
        return f"ContentStoreReader({self.location!r})"


def _hash_check(digest: str) -> Check:
    """A check that bytes hash to ``digest`` (for ``verify=True``)."""

    def check(data: memoryview) -> str | None:
        actual = hash_buffer(data)
        return None if actual == digest else f"its bytes hash to {actual}"

    return check


def _device(device: DeviceLike) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)
