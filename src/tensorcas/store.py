"""A store: a backend holding a marker, blobs and logs of records; a small facade over the layers.

* ``store.blobs`` (:class:`tensorcas.blobs.Blobs`): where a blob lives and its bytes;
* ``store.log`` (:class:`tensorcas.records.RecordLog`): the names and their records, read;
* :meth:`Store.open_log` (:class:`tensorcas.logwriter.LogWriter`): records written.

The layout (``tensorcas.format.layout``) is known here and above, never by a backend.  Opening
checks the marker (``tensorcas.json``) and, when asked to, creates the store.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from . import format as fmt
from ._meanwhile import meanwhile
from .backends.base import Backend, ObjectInfo, local_paths
from .backends.local import LocalBackend
from .backends.memory import MemoryBackend
from .backends.objectstore import ObjectStoreBackend, is_url
from .backends.readonly import read_only as read_only_backend
from .blobs import PACK_THRESHOLD, STREAM_CHUNK, Blobs, PackIndex, tensor_context
from .errors import Finding, FormatError, StoreError, StoreNotFoundError, TensorNotFoundError
from .format import RootEntry, TensorRecord
from .logwriter import LogWriter
from .records import LOG_WINDOW, RecordLog

# Names other modules know the store by: the facade's vocabulary.
__all__ = [
    "LOG_WINDOW",
    "PACK_THRESHOLD",
    "STREAM_CHUNK",
    "Location",
    "LogWriter",
    "Store",
    "open_backend",
    "tensor_context",
]

Location = str | os.PathLike[str] | Backend


def open_backend(
    loc: Location,
    *,
    durable: bool = False,
    read_only: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Backend:
    """A backend for a location: a ``Backend`` as is, ``memory://`` for a fresh in-memory one,
    ``s3://bucket/prefix`` (``gs://``, ``az://``) for object storage configured from the
    environment and ``storage_options``, otherwise a local directory; wrapped read-only when
    asked.  Any other ``scheme://`` is refused, never taken for a directory."""
    if isinstance(loc, Backend):
        backend = loc
    else:
        path = os.fspath(loc)
        if path == "memory://":
            backend = MemoryBackend()
        elif is_url(path) and not path.startswith("file://"):
            # Only logs and packs grow: other keys need no look for segments.
            appended = (fmt.LOGS + "/", fmt.PACKS + "/")
            backend = ObjectStoreBackend.from_url(path, storage_options, appends_under=appended)
        else:
            if path.startswith("file://"):
                path = path[len("file://") :]
            # Packs only grow and are read a few hundred bytes at a time: keep them open.
            backend = LocalBackend(path, durable=durable, keep_open=(fmt.PACKS + "/",))
    return read_only_backend(backend) if read_only else backend


class Store:
    """One store: open with :meth:`open`; blobs in :attr:`blobs`, records in :attr:`log`."""

    def __init__(self, backend: Backend, *, strict: bool = False) -> None:
        self.backend = backend
        lock = threading.RLock()
        packs = PackIndex(lock)
        self.log = RecordLog(backend, packs, lock, strict=strict)
        self.blobs = Blobs(backend, packs, self.log.refresh, lock)
        #: Whether :meth:`open` created the store where no log was: its index holds nothing
        #: then but what writers that started since wrote (a writer need not read it first).
        self.created = False

    @classmethod
    def open(
        cls,
        loc: Location,
        *,
        create: bool = False,
        durable: bool = False,
        read_only: bool = False,
        strict: bool = False,
        refresh: bool = False,
    ) -> Store:
        """Open the store at ``loc``; with ``create=True`` make it if it does not exist.

        ``memory://`` is a new, empty store every time (also when opened to read).
        ``refresh=True`` also reads the logs; where the store is not a local directory, the logs
        are listed while the marker is read (two round trips at once), and only read once the
        marker is found sound.
        """
        fresh_memory = not isinstance(loc, Backend) and os.fspath(loc) == "memory://"
        create = create or fresh_memory  # made here, then wrapped read-only if asked
        backend = open_backend(loc, durable=durable, read_only=read_only and not fresh_memory)
        root = _local_root(backend)
        if root is not None and not os.path.isdir(root):
            # Asked again: another thread or process may have made the directory meanwhile.
            if os.path.lexists(root) and not os.path.isdir(root):
                raise StoreNotFoundError(_not_a_directory(root))
            if not create:
                raise StoreNotFoundError(
                    f"no tensorcas store at {root}: the directory does not exist; check the path "
                    "(a new store is made by writing to it, e.g. with ContentStoreWriter)"
                )
        listing = _list_logs_meanwhile(backend) if refresh and root is None else None
        created = False
        meta = backend.read_range(fmt.META_KEY, 0, fmt.MAX_META_BYTES + 1)
        if meta is None:
            if not create:
                if root is not None and _is_torch_content_store(root):
                    raise StoreNotFoundError(
                        f"{root} is a directory written by PyTorch's torch.utils._content_store, "
                        f"not a tensorcas store; convert it with 'tensorcas import NEW_STORE {root}' "
                        "(tensorcas diff also reads it as it is)"
                    )
                if _has_foreign_content(backend):
                    raise StoreNotFoundError(
                        f"{backend.location} is not a tensorcas store: it holds other files and no "
                        f"{fmt.META_KEY}; check the path"
                    )
                raise StoreNotFoundError(
                    f"no tensorcas store at {backend.location}: {fmt.META_KEY} is missing "
                    "(a new store is made by writing to it, e.g. with ContentStoreWriter)"
                )
            seen: set[str] = set()
            if _has_foreign_content(backend, seen):
                raise FormatError(
                    f"{backend.location} is not empty and holds no tensorcas store; "
                    "choose an empty or new directory"
                )
            ours = fmt.encode_meta()
            # Ours is known without reading it back; another's, made meanwhile, is read.
            if backend.put_if_absent(fmt.META_KEY, ours):
                meta = ours
                created = fmt.LOGS not in seen
            else:
                meta = backend.read_range(fmt.META_KEY, 0, fmt.MAX_META_BYTES + 1)
            if meta is None:
                raise StoreError(f"store marker vanished while creating {backend.location}")
        fmt.validate_meta(meta, backend.location)
        if fresh_memory and read_only:
            backend = read_only_backend(backend)
        store = cls(backend, strict=strict)
        store.created = created
        if refresh:
            store.log.refresh(None if listing is None else listing.result())
        return store

    @property
    def location(self) -> str:
        return self.backend.location

    def open_log(self) -> LogWriter:
        """A new writer's log (created on its first entry)."""
        return LogWriter(self.blobs, self.log)

    # -- the questions everyone asks, answered by the record log -------------------------------

    def refresh(self) -> None:
        """Read what was appended to any log since the last refresh."""
        self.log.refresh()

    def get_record(self, name: str) -> TensorRecord:
        return self.log.get(name)

    def records(self, prefix: str = "") -> list[TensorRecord]:
        return self.log.records(prefix)

    def names(self, prefix: str = "", *, refresh: bool = True) -> list[str]:
        return self.log.names(prefix, refresh=refresh)

    def has_name(self, name: str) -> bool:
        """Whether the logs read so far name ``name`` (no I/O: for a caller that just refreshed)."""
        return self.log.has(name)

    def problems(self) -> list[Finding]:
        return self.log.problems()

    def roots(self) -> dict[str, RootEntry]:
        return self.log.roots()

    def resolve_alias(self, alias: str) -> str | None:
        return self.log.resolve_alias(alias)

    def referenced_blobs(self) -> set[str]:
        return self.log.referenced_blobs()

    def __contains__(self, name: str) -> bool:
        try:
            self.log.get(name)
        except TensorNotFoundError:
            return False
        return True


def _list_logs_meanwhile(backend: Backend) -> Future[list[tuple[str, ObjectInfo | None]]]:
    """The logs, listed on another thread while the caller reads the marker."""
    return meanwhile(lambda: list(backend.list_info(fmt.LOGS)))


def _local_root(backend: Backend) -> str | None:
    """The directory a store is in, where its backend has files (``LocalPaths``), else ``None``."""
    paths = local_paths(backend)
    root = paths.local_path("") if paths is not None else None
    return None if root is None else root.rstrip(os.sep) or os.sep


def _has_foreign_content(backend: Backend, seen: set[str] | None = None) -> bool:
    """Whether the location holds something no tensorcas store does.  A store's own entries do
    not count: another process may be creating the store at this very moment.  Where the store
    is a directory, its entries are looked at directly (an empty directory is something too).
    ``seen`` gets the store's own top-level entries found (all of them when the answer is no)."""
    seen = set() if seen is None else seen
    root = _local_root(backend)
    try:
        entries = (key.split("/", 1)[0] for key in backend.list("")) if root is None else iter(os.listdir(root))
        for entry in entries:
            if entry in fmt.TOP_LEVEL:
                seen.add(entry)
            elif root is None or not entry.startswith("."):
                return True
    except OSError:
        if root is None:
            raise
    return False


def _not_a_directory(path: str) -> str:
    """What to say when a store is expected at ``path`` but a file (or other non-directory) is there."""
    if os.path.islink(path):
        what = "a symbolic link to something that is not a directory"
    elif os.path.isfile(path):
        what = "a file"
    else:
        what = "not a directory"
    hint = ""
    if path.endswith(".safetensors"):
        hint = f"; to read it, import it into a store ('tensorcas import STORE {path}') or compare with 'tensorcas diff'"
    return f"no tensorcas store at {path}: it is {what}, and a store is a directory{hint}"


def _is_torch_content_store(root: str) -> bool:
    """Whether ``root`` looks like a directory PyTorch's ``torch.utils._content_store`` wrote."""
    return any(os.path.isdir(os.path.join(root, d)) for d in ("tensors", "storages"))
