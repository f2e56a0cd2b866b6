"""Blobs and named records over a backend.

A store is a backend holding a format marker (``tensorcas.json``), blobs under their digests
(``blobs/ab/cdef...``) and append-only logs of records (``logs/<writer>.log``), one log per writer
so that any number of processes can write at once without locks.  The current record of a name is
its newest entry over all logs (by time, then log, then line); a delete entry hides the name.

This layer moves bytes and records; it knows torch only through ``format``'s dtype table.  It
validates everything it reads (``format.scan_entry``, then ``format.record_from_fields`` when a
record is first used) and keeps the damage it finds in
``problems`` so that ``verify`` can report it, while undamaged names stay readable.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import format as fmt
from .backends.base import Appender, Backend, ObjectInfo
from .backends.local import LocalBackend, UnsafeFileError
from .backends.memory import MemoryBackend
from .errors import (
    BlobLostError,
    BlobNotFoundError,
    CorruptObjectError,
    FormatError,
    StoreError,
    StoreNotFoundError,
    TensorNotFoundError,
)
from .format import PackedBlob, TensorRecord, format_digest
from .hashing import new_hasher

#: Pieces in which streamed blobs are hashed and written (small enough to stay in cache).
STREAM_CHUNK = 1 << 20

#: The most bytes of a log read at once.
LOG_WINDOW = 16 << 20

#: Storages smaller than this are appended to the writer's pack instead of getting a file each:
#: creating a file costs more than writing a few kilobytes, and tiny files waste disk blocks.
PACK_THRESHOLD = 64 << 10

Location = str | os.PathLike[str] | Backend


def open_backend(loc: Location, *, durable: bool = False, read_only: bool = False) -> Backend:
    """A backend for a location: a ``Backend`` as is, ``memory://`` for a fresh in-memory one,
    otherwise a local directory."""
    if isinstance(loc, Backend):
        return loc
    path = os.fspath(loc)
    if path == "memory://":
        return MemoryBackend()
    if path.startswith("file://"):
        path = path[len("file://") :]
    return LocalBackend(path, durable=durable, read_only=read_only)


#: Where an entry sits in the global order, (time_ns, log key, line number): newer positions
#: win.  A plain tuple, so that comparing a million of them stays in C.
_Position = tuple[int, str, int]


@dataclass
class _LogState:
    offset: int = 0  # bytes consumed (whole lines only)
    lines: int = 0
    header_ok: bool = False
    rejected: bool = False  # its header is not one this release reads: ignored, for good


class _IndexEntry:
    """A name's newest entry.  A put's fields are validated into a record on first use, so that
    opening a store and listing its names does not validate every record."""

    __slots__ = ("fields", "position", "record")

    def __init__(self, position: _Position, fields: dict[str, Any] | bytes | None) -> None:
        self.position = position
        self.fields = fields  # None: deleted
        self.record: TensorRecord | None = None

    @property
    def deleted(self) -> bool:
        return self.fields is None


@dataclass(frozen=True)
class Problem:
    """Damage found while reading records: which log, which line, what is wrong."""

    where: str
    message: str
    severity: str = "error"  # or "warning" (an interrupted write's torn tail)


def _problem(where: str, exc: Exception) -> Problem:
    message = str(exc)
    if message.startswith(where + ": "):
        message = message[len(where) + 2 :]  # the location is Problem.where already
    return Problem(where, message)


@dataclass
class _Index:
    entries: dict[str, _IndexEntry] = field(default_factory=dict)
    logs: dict[str, _LogState] = field(default_factory=dict)
    problems: dict[tuple[str, int], Problem] = field(default_factory=dict)
    #: Every place the logs put each packed blob, in the order read (gc may copy a blob to a new
    #: pack before deleting the old one, so a blob can have several; some may be gone).
    packed: dict[str, list[PackedBlob]] = field(default_factory=dict)
    #: Blob lines read but not parsed yet (most opens only list names): (line, log, line number).
    pending: list[tuple[bytes, str, int]] = field(default_factory=list)
    #: Ids of packs whose writers said they will never append to them again.
    sealed: set[str] = field(default_factory=set)
    #: Each blob's newest root or unroot entry (``None``: unrooted), like ``entries`` for names.
    roots: dict[str, tuple[_Position, fmt.RootEntry | None]] = field(default_factory=dict)
    #: Each alias's newest root entry's blob.
    aliases: dict[str, tuple[_Position, str]] = field(default_factory=dict)


class Store:
    """One store: open with :meth:`open`, then read and write blobs and records."""

    def __init__(self, backend: Backend, *, strict: bool = False) -> None:
        self.backend = backend
        #: Validate every record as the logs are read (verify), not only records when used.
        self.strict = strict
        self._index = _Index()
        self._lock = threading.RLock()
        self._touched: dict[str, float] = {}
        self._pack_keys: set[str] = set()

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        loc: Location,
        *,
        create: bool = False,
        durable: bool = False,
        read_only: bool = False,
        strict: bool = False,
    ) -> Store:
        """Open the store at ``loc``; with ``create=True`` make it if it does not exist.

        ``memory://`` is a new, empty store every time (also when opened to read).
        """
        if not isinstance(loc, Backend) and os.fspath(loc) == "memory://":
            create = True
        backend = open_backend(loc, durable=durable, read_only=read_only)
        if isinstance(backend, LocalBackend) and not os.path.isdir(backend.root):
            if os.path.lexists(backend.root):
                raise StoreNotFoundError(_not_a_directory(backend.root))
            if not create:
                raise StoreNotFoundError(
                    f"no tensorcas store at {backend.root}: the directory does not exist "
                    "(write to it with ContentStoreWriter to create one)"
                )
            try:
                os.makedirs(backend.root, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store directory {backend.root}: {exc.strerror}") from exc
        meta = backend.read_range(fmt.META_KEY, 0, fmt.MAX_META_BYTES + 1)
        if meta is None:
            if not create:
                if isinstance(backend, LocalBackend) and _is_torch_content_store(backend.root):
                    raise StoreNotFoundError(
                        f"{backend.root} is a directory written by PyTorch's torch.utils._content_store, "
                        f"not a tensorcas store; convert it with 'tensorcas import NEW_STORE {backend.root}' "
                        "(tensorcas diff also reads it as it is)"
                    )
                raise StoreNotFoundError(
                    f"no tensorcas store at {backend.location}: {fmt.META_KEY} is missing "
                    "(write to it with ContentStoreWriter to create one)"
                )
            if isinstance(backend, LocalBackend) and _has_foreign_content(backend.root):
                raise FormatError(
                    f"{backend.root} is not empty and holds no tensorcas store; "
                    "choose an empty or new directory"
                )
            backend.put_if_absent(fmt.META_KEY, fmt.encode_meta())
            meta = backend.read_range(fmt.META_KEY, 0, fmt.MAX_META_BYTES + 1)
            if meta is None:
                raise StoreError(f"store marker vanished while creating {backend.location}")
        fmt.validate_meta(meta, backend.location)
        return cls(backend, strict=strict)

    @property
    def location(self) -> str:
        return self.backend.location

    # -- blobs -------------------------------------------------------------------------------

    def blob_info(self, digest: str) -> ObjectInfo | None:
        """Size and mtime of a blob, loose or packed (the pack's mtime), ``None`` if absent."""
        info = self.backend.stat(fmt.blob_key(digest))
        if info is not None:
            return info
        found = self._find_packed(digest)
        return None if found is None else ObjectInfo(found[0].nbytes, found[1].mtime)

    def _find_packed(self, digest: str) -> tuple[PackedBlob, ObjectInfo] | None:
        """The first place the blob is really packed: its pack exists and is long enough.  If none
        is, read what the logs added since (gc may have moved the blob) and look again."""
        for attempt in range(2):
            with self._lock:
                if attempt or digest not in self._packed_index():
                    self.refresh()
                locations = list(self._packed_index().get(digest, ()))
            for packed in locations:
                info = self.backend.stat(fmt.pack_key(packed.pack))
                if info is not None and info.size >= packed.offset + packed.nbytes:
                    return packed, info
        return None

    def blob_path(self, digest: str) -> str | None:
        """A file holding exactly the blob (loose blobs of local stores), else ``None``."""
        if digest in self._packed_index() and not self.backend.exists(fmt.blob_key(digest)):
            return None
        return self.backend.local_path(fmt.blob_key(digest))

    def packed_places(self, digest: str) -> list[PackedBlob]:
        """Every place the logs read so far put this blob in a pack (some may be gone)."""
        return list(self._packed_index().get(digest, ()))

    def packed_blob(self, digest: str) -> PackedBlob | None:
        """Where a packed blob really lives (a pack that exists and holds it whole), or ``None``."""
        found = self._find_packed(digest)
        return None if found is None else found[0]

    def keep_blob(self, digest: str, nbytes: int) -> bool:
        """Whether a sound-looking blob of ``nbytes`` is already stored; if so, mark it in use so
        that a concurrent gc keeps it (see ``Backend.delete_if_stale``)."""
        key = fmt.blob_key(digest)
        info = self.backend.stat(key)
        return info is not None and info.size == nbytes and self.backend.touch(key)

    def keep_packed(self, digest: str, nbytes: int) -> bool:
        """Like :meth:`keep_blob`, for blobs the logs read so far place in a pack."""
        for packed in self._packed_index().get(digest, ()):
            if packed.nbytes == nbytes and self._touch_pack(packed):
                return True
        return False

    def _touch_pack(self, packed: PackedBlob) -> bool:
        key = fmt.pack_key(packed.pack)
        info = self.backend.stat(key)
        if info is None or info.size < packed.offset + packed.nbytes:
            return False
        # Packs hold many blobs: touching one at most once a second is enough for gc's grace.
        now = time.monotonic()
        if now - self._touched.get(key, -10.0) >= 1.0:
            if not self.backend.touch(key):
                return False
            self._touched[key] = now
        return True

    def note_packed(self, packed: PackedBlob) -> None:
        """Record a blob this process just packed (its log line is already appended)."""
        with self._lock:
            self._packed_index().setdefault(packed.blob, []).append(packed)
        self._touched[fmt.pack_key(packed.pack)] = time.monotonic()

    def put_blob(self, digest: str, chunks: Iterable[memoryview], nbytes: int) -> None:
        """Store the bytes ``chunks`` yields under ``digest`` (already computed by the caller).

        Replaces a stored blob of the wrong size (damaged); otherwise never overwrites.
        """
        if self.keep_blob(digest, nbytes):
            return
        key = fmt.blob_key(digest)
        info = self.backend.stat(key)
        with self.backend.stage(key.rpartition("/")[0]) as staged:
            for chunk in chunks:
                staged.write(chunk)
            staged.publish(key, overwrite=info is not None and info.size != nbytes)

    def put_blob_streaming(self, chunks: Iterable[memoryview], nbytes: int) -> str:
        """Hash and write the bytes in one pass, then publish under their digest.

        For bytes that must be fetched to be seen at all (a device storage copied to the host a
        chunk at a time): each piece is hashed, then written while it is still in cache, so the
        device is read once.  CPU storages are hashed first instead (see ContentStoreWriter):
        measured here, hashing and writing at once on two threads was slower than one after the
        other, and hashing first lets unchanged bytes skip the write.
        """
        hasher = new_hasher(0)
        with self.backend.stage("blobs") as staged:
            for chunk in chunks:
                for start in range(0, chunk.nbytes, STREAM_CHUNK):
                    piece = chunk[start : start + STREAM_CHUNK]
                    hasher.update(piece)
                    staged.write(piece)
            digest = format_digest(hasher.hexdigest())
            key = fmt.blob_key(digest)
            info = self.backend.stat(key)
            if info is not None and info.size == nbytes and self.backend.touch(key):
                return digest  # stored already (the temporary is discarded)
            staged.publish(key, overwrite=info is not None)  # replaces a blob of the wrong size
        return digest

    def is_packed(self, digest: str) -> bool:
        """Whether the logs read so far place this blob in a pack."""
        return digest in self._packed_index()

    def read_packed(self, digest: str, nbytes: int, *, name: str | None = None) -> bytes:
        """The bytes of a blob the logs place in a pack: the first place that holds all of them
        (reading the logs again before giving up, since gc may have moved the blob)."""
        places: list[PackedBlob] = []
        gone = True  # no pack that should hold the blob exists at all
        for attempt in range(2):
            with self._lock:
                if attempt:
                    self.refresh()
                places = list(self._packed_index().get(digest, ()))
            for packed in places:
                if packed.nbytes != nbytes:
                    gone = False
                    continue  # not the blob the record describes
                data = self.backend.read_range(fmt.pack_key(packed.pack), packed.offset, nbytes)
                if data is not None and len(data) == nbytes:
                    return data
                gone = gone and data is None
        if not places:
            self._check_blob_size(digest, None, nbytes, name)  # raises: missing
        raise (BlobLostError if gone else CorruptObjectError)(
            f"{who(name)}blob {digest} of {nbytes} bytes is lost: "
            f"{', '.join(fmt.pack_key(p.pack) for p in places)} is missing, cut short or holds another size; "
            f"run 'tensorcas verify {self.location}'"
        )

    def read_blob_into(self, digest: str, out: memoryview, *, name: str | None = None) -> None:
        """Fill ``out`` with the blob; its size must be exactly ``out.nbytes``."""
        if self.is_packed(digest):
            try:
                out[:] = self.read_packed(digest, out.nbytes, name=name)
                return
            except CorruptObjectError:
                if not self.backend.exists(fmt.blob_key(digest)):
                    raise
        key = fmt.blob_key(digest)
        info = self.backend.stat(key)
        if info is None and self._find_packed(digest) is not None:  # packed by a newer log
            out[:] = self.read_packed(digest, out.nbytes, name=name)
            return
        self._read_loose_into(digest, info, out, name)

    def read_loose_into(self, digest: str, out: memoryview, *, name: str | None = None) -> bool:
        """Fill ``out`` from the blob's own file, if it has one (``False`` if not)."""
        info = self.backend.stat(fmt.blob_key(digest))
        if info is None:
            return False
        self._read_loose_into(digest, info, out, name)
        return True

    def _read_loose_into(self, digest: str, info: ObjectInfo | None, out: memoryview, name: str | None) -> None:
        self._check_blob_size(digest, info, out.nbytes, name)
        n = self.backend.read_into(fmt.blob_key(digest), out)
        if n is None or n != out.nbytes:
            raise CorruptObjectError(
                f"{who(name)}blob {digest} changed size while it was read ({n} of {out.nbytes} bytes); "
                f"run 'tensorcas verify {self.location}'"
            )

    def check_blob(self, digest: str, nbytes: int, *, name: str | None = None) -> ObjectInfo:
        info = self.blob_info(digest)
        self._check_blob_size(digest, info, nbytes, name)
        assert info is not None
        return info

    def _check_blob_size(self, digest: str, info: ObjectInfo | None, nbytes: int, name: str | None) -> None:
        if info is None:
            if name is None:
                raise BlobNotFoundError(f"blob {digest} is not in store {self.location}")
            raise BlobLostError(
                f"tensor {name!r}: its blob {digest} is missing from store {self.location}; "
                "the store is damaged or was copied incompletely (run 'tensorcas verify')"
            )
        if info.size != nbytes:
            raise CorruptObjectError(
                f"{who(name)}blob {digest} holds {info.size} bytes but {nbytes} were stored "
                f"(truncated or extended); run 'tensorcas verify {self.location}'"
            )

    def loose_blobs(self) -> Iterator[str]:
        """Digests of the blobs stored as files of their own (keys that are not blobs are ignored)."""
        for key in self.backend.list("blobs"):
            digest = fmt.key_to_digest(key)
            if digest is not None:
                yield digest

    def blobs(self) -> set[str]:
        """Digests of every stored blob: loose, or placed by the logs in a pack that exists."""
        packs = self.packs()
        packed = {p.blob for key, places in packs.items() if key in self._pack_keys for p in places}
        return packed | set(self.loose_blobs())

    def packs(self) -> dict[str, list[PackedBlob]]:
        """Every pack key (existing, or named by the logs) with the blobs the logs place in it."""
        self.refresh()
        self._pack_keys = {k for k in self.backend.list("packs") if fmt.is_pack_key(k)}
        out: dict[str, list[PackedBlob]] = {k: [] for k in sorted(self._pack_keys)}
        with self._lock:
            for places in self._packed_index().values():
                for packed in places:
                    out.setdefault(fmt.pack_key(packed.pack), []).append(packed)
        return out

    def sealed_packs(self) -> set[str]:
        """Keys of the packs whose writers closed them: nothing will be appended to them again."""
        self.refresh()
        with self._lock:
            return {fmt.pack_key(pack) for pack in self._index.sealed}

    # -- records -----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read what was appended to any log since the last refresh."""
        with self._lock, _no_cyclic_gc():
            for key in sorted(self.backend.list("logs")):
                if fmt.is_log_key(key):
                    self._read_log(key)
                else:
                    self._check_log_shaped(key)

    def _check_log_shaped(self, key: str) -> None:
        """A key below a directory that has a log's name: a log that is a directory, which
        cannot be read and may have held records (damage, like an unreadable log)."""
        top = "/".join(key.split("/", 2)[:2])
        if top != key and fmt.is_log_key(top) and (top, 0) not in self._index.problems:
            self._index.problems[(top, 0)] = Problem(
                top, "is a directory, not a log file; its records cannot be read"
            )

    def _read_log(self, key: str) -> None:
        """Apply what was appended to one log since it was last read, a bounded window at a time
        (a log may be huge, or a hostile sparse file), whole lines only."""
        index = self._index
        state = index.logs.setdefault(key, _LogState())
        if state.rejected:
            return
        try:
            info = self.backend.stat(key)
        except UnsafeFileError as exc:
            # A log that cannot be read (a symlink, a FIFO...) may hold records: its blobs would
            # look unused, so it is damage that stops gc, never a log to skip quietly.
            index.problems[(key, 0)] = _problem(key, exc)
            return
        index.problems.pop((key, 0), None)
        size = 0 if info is None else info.size
        while size > state.offset:
            data = self.backend.read_range(key, state.offset, min(size - state.offset, LOG_WINDOW)) or b""
            end = data.rfind(b"\n") + 1
            if end == 0:
                if len(data) >= LOG_WINDOW:
                    # No line ends within a whole window: far past the line limit, not ours.
                    index.problems[(key, state.lines + 1)] = Problem(
                        f"{key} line {state.lines + 1}",
                        f"no line end within {LOG_WINDOW} bytes; the rest of the log is ignored",
                    )
                    state.rejected = True
                elif data:
                    index.problems[(key, -1)] = Problem(
                        key, f"{len(data)} bytes after the last complete line (an interrupted write)", "warning"
                    )
                return
            self._apply_lines(key, state, data[:end])
            state.offset += end
            if state.rejected:
                return
        index.problems.pop((key, -1), None)

    def _apply_lines(self, key: str, state: _LogState, data: bytes) -> None:
        index = self._index
        lines = data.split(b"\n")
        lines.pop()
        blob_start, pending, entries = fmt.BLOB_LINE_START, index.pending, index.entries
        for number, line in enumerate(lines, state.lines + 1):
            # Blob lines are parsed only when a packed blob is looked up (_packed_index).
            if state.header_ok and line.startswith(blob_start, 17):
                pending.append((line, key, number))
                continue
            try:
                if not state.header_ok:
                    fmt.decode_header(line, f"{key} line {number}")
                    state.header_ok = True
                    continue
                entry = fmt.scan_entry(line, "")
            except StoreError:
                where = f"{key} line {number}"
                try:
                    fmt.scan_entry(line, where) if state.header_ok else fmt.decode_header(line, where)
                except StoreError as exc:
                    index.problems[(key, number)] = _problem(where, exc)
                if not state.header_ok:
                    state.rejected = True  # not a log we understand: ignore all of it, for good
                    return
                continue
            if type(entry) is tuple:
                name, time_ns, fields = entry
                position = (time_ns, key, number)
                if self.strict and fields is not None:
                    where = f"{key} line {number}"
                    try:
                        fmt.record_from_fields(name, fields, where)
                    except StoreError as exc:
                        index.problems[(key, number)] = _problem(where, exc)
                current = entries.get(name)
                if current is None or current.position < position:
                    entries[name] = _IndexEntry(position, fields)
            elif isinstance(entry, PackedBlob):
                self._add_packed(entry)
            elif isinstance(entry, fmt.SealedPack):
                index.sealed.add(entry.pack)
            elif isinstance(entry, (fmt.RootEntry, fmt.UnrootEntry)):
                self._add_root(entry, (entry.time_ns, key, number))
        state.lines += len(lines)

    def _add_root(self, entry: fmt.RootEntry | fmt.UnrootEntry, position: _Position) -> None:
        roots = self._index.roots
        current = roots.get(entry.blob)
        if current is None or current[0] < position:
            roots[entry.blob] = (position, entry if isinstance(entry, fmt.RootEntry) else None)
        if isinstance(entry, fmt.RootEntry):
            aliases = self._index.aliases
            for alias in entry.aliases:
                known = aliases.get(alias)
                if known is None or known[0] < position:
                    aliases[alias] = (position, entry.blob)

    def _add_packed(self, entry: PackedBlob) -> None:
        places = self._index.packed.setdefault(entry.blob, [])
        if entry not in places:
            places.append(entry)

    def _packed_index(self) -> dict[str, list[PackedBlob]]:
        """Where the logs read so far place each packed blob (parsing pending blob lines)."""
        index = self._index
        if index.pending:
            with self._lock:
                for line, log, number in index.pending:
                    where = f"{log} line {number}"
                    try:
                        entry = fmt.decode_blob_line(line, where)
                    except StoreError as exc:
                        index.problems[(log, number)] = _problem(where, exc)
                        continue
                    self._add_packed(entry)
                index.pending.clear()
        return index.packed

    def _resolve(self, name: str, entry: _IndexEntry) -> TensorRecord:
        """The validated record of a put entry; damage is raised and kept for ``verify``."""
        if entry.record is None:
            assert entry.fields is not None
            _, log, number = entry.position
            where = f"{log} line {number}"
            try:
                entry.record = fmt.record_from_fields(name, entry.fields, where)
            except CorruptObjectError as exc:
                self._index.problems[(log, number)] = _problem(where, exc)
                raise CorruptObjectError(
                    f"tensor {name!r}: its record is damaged ({exc}); run 'tensorcas verify {self.location}'"
                ) from None
        return entry.record

    def peek_record(self, name: str) -> TensorRecord | None:
        """The current record of ``name`` as far as the logs read so far say (no I/O)."""
        entry = self._index.entries.get(name)
        if entry is None or entry.deleted:
            return None
        try:
            return self._resolve(name, entry)
        except CorruptObjectError:
            return None

    def problems(self) -> list[Problem]:
        """Damage found in the logs read so far (blob lines included)."""
        self._packed_index()
        with self._lock:
            return list(self._index.problems.values())

    def get_record(self, name: str) -> TensorRecord:
        fmt.validate_name(name)
        with self._lock:
            entry = self._index.entries.get(name)
            if entry is None or entry.deleted:
                self.refresh()
                entry = self._index.entries.get(name)
            if entry is None or entry.deleted:
                raise TensorNotFoundError(
                    f"no tensor named {name!r} in store {self.location}"
                    + (" (it was deleted)" if entry is not None else "")
                    + "; list the names with 'tensorcas ls'"
                )
            return self._resolve(name, entry)

    def _live(self, prefix: str) -> list[tuple[str, _IndexEntry]]:
        fmt.validate_prefix(prefix)
        with self._lock:
            self.refresh()
            live = [
                (name, e)
                for name, e in self._index.entries.items()
                if not e.deleted and (not prefix or fmt.name_matches(name, prefix))
            ]
        with _no_cyclic_gc():
            live.sort(key=lambda pair: pair[1].position)
        return live

    def records(self, prefix: str = "") -> list[TensorRecord]:
        """Current records under ``prefix``, in the order they were written.  Damaged records are
        left out (and kept in :meth:`problems`)."""
        out = []
        with self._lock:
            for name, entry in self._live(prefix):
                try:
                    out.append(self._resolve(name, entry))
                except CorruptObjectError:
                    continue
        return out

    def names(self, prefix: str = "") -> list[str]:
        """Current names under ``prefix``, in writing order, without validating their records."""
        return [name for name, _ in self._live(prefix)]

    def __contains__(self, name: str) -> bool:
        try:
            self.get_record(name)
        except TensorNotFoundError:
            return False
        return True

    def roots(self) -> dict[str, fmt.RootEntry]:
        """The current storage roots (blobs kept without a name), by digest, oldest first."""
        with self._lock:
            self.refresh()
            live = [(pos, entry) for pos, entry in self._index.roots.values() if entry is not None]
        live.sort(key=lambda pair: pair[0])
        return {entry.blob: entry for _, entry in live}

    def resolve_alias(self, alias: str) -> str | None:
        """The blake3 digest of the bytes known by the foreign digest ``alias`` (``torch:<hex>``)."""
        fmt.validate_alias(alias)
        with self._lock:
            found = self._index.aliases.get(alias)
            if found is None:
                self.refresh()
                found = self._index.aliases.get(alias)
        return None if found is None else found[1]

    def referenced_blobs(self) -> set[str]:
        """Every blob a current record or a current root uses: what gc must keep.  Records are
        validated on the way (damage lands in :meth:`problems`)."""
        with self._lock:
            blobs = {record.blob for record in self.records()}
            blobs.update(
                digest for digest, (_, entry) in self._index.roots.items() if entry is not None
            )
        return blobs

    def blob_present(self, digest: str, nbytes: int) -> bool:
        """Whether a copy of the blob is stored whole right now (loose, or in a pack that exists
        and is long enough; the logs are read again before saying no)."""
        info = self.backend.stat(fmt.blob_key(digest))
        if info is not None and info.size == nbytes:
            return True
        found = self._find_packed(digest)
        return found is not None and found[0].nbytes == nbytes

    def log_keys(self) -> list[str]:
        return sorted(k for k in self.backend.list("logs") if fmt.is_log_key(k))

    # -- writing records ---------------------------------------------------------------------

    def open_log(self) -> LogWriter:
        return LogWriter(self)


class LogWriter:
    """One writer's append-only log: created on the first entry, one line per entry."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writer_id = _new_writer_id()
        self._appender: Appender | None = None
        self._last_time = 0
        self._lock = threading.Lock()
        self._pack: Appender | None = None
        self._pack_id = ""
        self._pack_size = 0
        self._packs_opened = 0
        self._unsealed: list[str] = []

    def _time(self) -> int:
        self._last_time = max(time.time_ns(), self._last_time + 1)
        return self._last_time

    def put(self, record: TensorRecord, packed_data: memoryview | bytes | None = None) -> None:
        """Append ``record``; with ``packed_data``, first append those bytes (the record's blob)
        to this writer's pack, and publish their location in the same log write as the record."""
        with self._lock:
            line = fmt.encode_put(record, self._time())
            packed = None
            if packed_data is not None:
                packed = self._pack_bytes(record.blob, packed_data)
                line = fmt.encode_packed(packed) + line
            self._append(line)
        if packed is not None:
            self.store.note_packed(packed)

    def _pack_bytes(self, digest: str, data: memoryview | bytes) -> PackedBlob:
        nbytes = memoryview(data).nbytes
        if self._pack is None:
            self._packs_opened += 1
            self._pack_id = f"{self.writer_id}-{self._packs_opened}"
            self._pack = self.store.backend.open_append(fmt.pack_key(self._pack_id))
            self._pack_size = 0
        try:
            self._pack.append(bytes(data))
        except BaseException:
            # The pack's length is unknown now: continue in a new one (sealed on close).
            self._close_pack()
            raise
        packed = PackedBlob(blob=digest, nbytes=nbytes, pack=self._pack_id, offset=self._pack_size)
        self._pack_size += nbytes
        return packed

    def put_packed(self, digest: str, data: memoryview | bytes) -> PackedBlob:
        """Append a small blob to the pack and its location to the log (no record)."""
        with self._lock:
            packed = self._pack_bytes(digest, data)
            self._append(fmt.encode_packed(packed))
        self.store.note_packed(packed)
        return packed

    def root(
        self,
        digest: str,
        nbytes: int,
        aliases: tuple[str, ...] = (),
        packed_data: bytes | None = None,
    ) -> None:
        """Append a root entry for a stored blob; with ``packed_data``, first pack those bytes
        (the blob) and publish their location in the same log write."""
        with self._lock:
            line = fmt.encode_root(fmt.RootEntry(digest, nbytes, self._time(), aliases))
            packed = None
            if packed_data is not None:
                packed = self._pack_bytes(digest, packed_data)
                line = fmt.encode_packed(packed) + line
            self._append(line)
        if packed is not None:
            self.store.note_packed(packed)

    def unroot(self, digest: str) -> None:
        """Append an unroot entry: gc may collect the blob once nothing else uses it."""
        with self._lock:
            self._append(fmt.encode_unroot(digest, self._time()))

    def delete(self, name: str) -> None:
        """Append a delete entry; ``TensorNotFoundError`` if the name is absent or deleted.  The
        store's index is refreshed first: this writer's own puts and deletes reach it only then."""
        with self._lock:
            self.store.refresh()
            self.store.get_record(name)
            self._append(fmt.encode_delete(name, self._time()))

    def _append(self, line: bytes) -> None:
        if self._appender is None:
            self._appender = self._open_log()
        try:
            self._appender.append(line)
        except BaseException:
            # The log may now end in a torn line, which readers take for an interrupted write
            # (a warning) only while nothing follows it: leave that log and go on in a new one.
            self._abandon_log(self._appender)
            raise

    def _open_log(self) -> Appender:
        """Create a log for this writer and write its header.  Readers ignore a log whose first
        line is not a whole header, so a log whose creation or header failed is abandoned too."""
        try:
            appender = self.store.backend.open_append(fmt.log_key(self.writer_id))
        except BaseException:
            self._abandon_log(None)
            raise
        try:
            appender.append(fmt.encode_header(self.writer_id))
        except BaseException:
            self._abandon_log(appender)
            raise
        return appender

    def _abandon_log(self, appender: Appender | None) -> None:
        """Stop appending to the current log; the next entry starts a log of a new name."""
        self._appender = None
        self.writer_id = _new_writer_id()
        if appender is not None:
            try:
                appender.close()
            except Exception:
                pass  # the append's own error is the one the caller needs to see

    def _close_pack(self) -> None:
        pack, self._pack = self._pack, None
        if pack is not None:
            self._unsealed.append(self._pack_id)
            try:
                pack.close()
            except Exception:
                pass  # the pack is done with either way

    def _seal_packs(self) -> None:
        """Say in the log that this writer's packs are closed, so that gc may later rewrite them.
        Best effort: a pack left unsealed is only never collected."""
        self._close_pack()
        try:
            while self._unsealed:
                self._append(fmt.encode_seal(self._unsealed[0]))
                self._unsealed.pop(0)
        except Exception:
            pass

    def close(self) -> None:
        with self._lock:
            self._seal_packs()
            if self._appender is not None:
                self._appender.close()
            self._appender = None


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: indexing a large store creates many small objects and
    no cycles, and the collector would only walk them again and again."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _new_writer_id() -> str:
    return f"{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def who(name: str | None) -> str:
    """``tensor 'name': `` to start a message about a tensor's blob, or nothing."""
    return f"tensor {name!r}: " if name is not None else ""


_OWN_ENTRIES = frozenset((fmt.META_KEY, "blobs", "packs", "logs"))


def _has_foreign_content(root: str) -> bool:
    """Whether the directory holds something no tensorcas store does.  A store's own entries do
    not count: another process may be creating the store at this very moment."""
    try:
        return any(not entry.startswith(".") and entry not in _OWN_ENTRIES for entry in os.listdir(root))
    except OSError:
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
