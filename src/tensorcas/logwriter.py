"""The record log, written: one writer's log, and the pack it appends small blobs to.

A log is created on the writer's first entry, starts with a header, and gets one line per entry.
A small blob is appended to the writer's pack and its location published in the same log write as
the record that uses it, so a reader never sees the record without the place of its bytes.

On a backend that cannot append (no ``Appending``), a log is published again whole, with the new
entry, each time (each version holds the previous one, so readers reading on from where they were
see only whole lines); small blobs are then not packed at all (``Blobs.packs_size``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterable

from . import format as fmt
from .backends.base import Appender, Backend, appending
from .blobs import Blobs
from .errors import InvalidNameError, StoreError
from .format import PackedBlob, TensorRecord
from .records import RecordLog

#: The most delete entries one append carries (a bounded write, one segment on object storage).
DELETES_PER_APPEND = 4096


class LogWriter:
    """One writer's append-only log and pack."""

    def __init__(self, blobs: Blobs, records: RecordLog) -> None:
        self.blobs = blobs
        self.records = records
        self.writer_id = _new_writer_id()
        self._appender: Appender | None = None
        self._last_time = 0
        self._lock = threading.Lock()
        self._pack: Appender | None = None
        self._pack_id = ""
        self._pack_size = 0
        self._packs_opened = 0
        self._unsealed: list[str] = []
        self._closed = False
        #: The process that appends to this log.  A forked child inherits the writer but must
        #: not append to its parent's log or pack (its seal, appended while the parent still
        #: packs, would let gc rewrite the pack under the parent): there it is closed already.
        self._pid = os.getpid()

    @property
    def backend(self) -> Backend:
        return self.blobs.backend

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
                line = packed.encode() + line
            self._append(line)
        if packed is not None:
            self.blobs.note_packed(packed)

    def put_packed(self, digest: str, data: memoryview | bytes) -> PackedBlob:
        """Append a small blob to the pack and its location to the log (no record)."""
        with self._lock:
            packed = self._pack_bytes(digest, data)
            self._append(packed.encode())
        self.blobs.note_packed(packed)
        return packed

    def root(
        self, digest: str, nbytes: int, aliases: tuple[str, ...] = (), packed_data: bytes | None = None
    ) -> None:
        """Append a root entry for a stored blob; with ``packed_data``, first pack those bytes
        (the blob) and publish their location in the same log write."""
        with self._lock:
            line = fmt.RootEntry(digest, nbytes, self._time(), aliases).encode()
            packed = None
            if packed_data is not None:
                packed = self._pack_bytes(digest, packed_data)
                line = packed.encode() + line
            self._append(line)
        if packed is not None:
            self.blobs.note_packed(packed)

    def unroot(self, digest: str) -> None:
        """Append an unroot entry: gc may collect the blob once nothing else uses it."""
        with self._lock:
            self._append(fmt.encode_unroot(digest, self._time()))

    def delete(self, name: str) -> None:
        """Append a delete entry; ``TensorNotFoundError`` if the name is absent or deleted.  The
        index is refreshed first: this writer's own puts and deletes reach it only then."""
        self.delete_many([name])

    def delete_many(self, names: Iterable[str]) -> None:
        """Append a delete entry for each name, after reading the logs once and checking every
        name: ``TensorNotFoundError`` (nothing appended) if one is absent or deleted.  The entries
        go out in few appends (a removal of thousands of names is not thousands of refreshes)."""
        if isinstance(names, str):  # its letters, one-letter names each: "ab" removes a and b
            raise InvalidNameError(
                f"delete_tensors takes a list of names, not the str {names!r}; "
                f"pass [{names!r}] (or use delete_tensor)"
            )
        # Plain copies of the characters: a str subclass's own __eq__ and __hash__ must not make
        # two names one (the second then silently kept), as in ``RecordLog.get``.
        plain = [str.__str__(name) if isinstance(name, str) else name for name in names]
        with self._lock:
            self.records.refresh()
            chosen = list(dict.fromkeys(plain))
            for name in chosen:
                self.records.get(name)
            lines = [fmt.encode_delete(name, self._time()) for name in chosen]
            for start in range(0, len(lines), DELETES_PER_APPEND):
                self._append(b"".join(lines[start : start + DELETES_PER_APPEND]))

    def prepare(self) -> None:
        """Create this writer's log (with its header) now if it has none: a caller about to store
        a large blob runs this beside the upload, so that the record's append after it is one
        request on object storage, not three.  Failures are left to that append to meet."""
        if self.inherited:
            return  # a forked child creates nothing (the log's name is the parent's)
        with self._lock:
            if self._closed or self._appender is not None:
                return
            try:
                self._appender = self._open_log()
            except Exception:
                pass  # the first entry opens a log of a new name, and raises what fails then

    @property
    def inherited(self) -> bool:
        """Whether this process got the writer through a fork (its log is the parent's)."""
        return os.getpid() != self._pid

    def close(self) -> None:
        if self.inherited:
            self._closed = True  # the parent's log and packs are the parent's to close
            return
        with self._lock:
            self._seal_packs()
            if self._appender is not None:
                self._appender.close()
            self._appender = None
            self._closed = True

    # -- the pack ------------------------------------------------------------------------------

    def _pack_bytes(self, digest: str, data: memoryview | bytes) -> PackedBlob:
        self._check_open()
        nbytes = memoryview(data).nbytes
        if self._pack is None:
            can_append = appending(self.backend)
            if can_append is None:
                raise StoreError(f"store {self.backend.location} cannot hold packs (its backend cannot append)")
            self._packs_opened += 1
            self._pack_id = f"{self.writer_id}-{self._packs_opened}"
            self._pack = can_append.open_append(fmt.pack_key(self._pack_id))
            self._pack_size = 0
        try:
            self._pack.append(bytes(data))
        except BaseException:
            # The pack's length is unknown now: continue in a new one (sealed on close).  A pack
            # that holds nothing a log names is removed instead, so that a full disk does not
            # leave an empty pack per failed write.
            self._close_pack(remove=self._pack_size == 0)
            raise
        packed = PackedBlob(blob=digest, nbytes=nbytes, pack=self._pack_id, offset=self._pack_size)
        self._pack_size += nbytes
        return packed

    def _close_pack(self, *, remove: bool = False) -> None:
        pack, self._pack = self._pack, None
        if pack is not None:
            try:
                pack.close()
            except Exception:
                pass  # the pack is done with either way
            if remove and _remove_quietly(self.backend, fmt.pack_key(self._pack_id)):
                return  # (its id is not used again: pack ids are never reused)
            self._unsealed.append(self._pack_id)

    def seal_packs(self) -> None:
        """Seal the packs written so far (the next small blob starts a new pack), so that gc may
        rewrite them while this writer stays open.  Best effort, as when closing."""
        with self._lock:
            if not self._closed and not self.inherited:
                self._seal_packs()

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

    # -- the log -------------------------------------------------------------------------------

    def check_process(self) -> None:
        """Raise unless this is the process that opened the writer (see ``_pid``): a writer
        checks this before it stores anything, not only at the append."""
        if self.inherited:
            raise StoreError(
                f"this writer of {self.backend.location} was opened by process {self._pid}, before "
                "a fork; a forked process must open a writer of its own"
            )

    def _check_open(self) -> None:
        self.check_process()
        if self._closed:  # a write on another thread that began before its writer was closed
            raise StoreError(
                f"the writer of log {fmt.log_key(self.writer_id)} in {self.backend.location} was closed "
                "while this write ran, which is not recorded; write it again with a new writer"
            )

    def _append(self, line: bytes) -> None:
        self._check_open()
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
        key = fmt.log_key(self.writer_id)
        try:
            can_append = appending(self.backend)
            appender = can_append.open_append(key) if can_append is not None else _Republisher(self.backend, key)
        except BaseException:
            self._abandon_log(None)
            raise
        try:
            appender.append(fmt.encode_header(self.writer_id))
        except BaseException:
            # A log without a whole header is ignored by readers, and no line of it was
            # acknowledged: remove it rather than leave an empty log per failed write.
            self._abandon_log(appender)
            _remove_quietly(self.backend, key)
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


def _remove_quietly(backend: Backend, key: str) -> bool:
    """Delete an object this writer created and nothing refers to; ``False`` if that failed."""
    try:
        return backend.delete(key)
    except Exception:
        return False


class _Republisher(Appender):
    """Appending where the backend cannot: the object is published again, whole, on each append.
    It costs the log's size per entry, so it suits object stores holding few, large tensors."""

    def __init__(self, backend: Backend, key: str) -> None:
        self._backend = backend
        self._key = key
        self._data = bytearray()
        self._closed = False

    def append(self, data: bytes) -> None:
        if self._closed:
            raise StoreError(f"log {self._key} is closed")
        first = not self._data
        self._data += data
        try:
            published = self._backend.put_if_absent(self._key, bytes(self._data), overwrite=not first)
        except BaseException:
            del self._data[len(self._data) - len(data) :]
            raise
        if first and not published:
            raise StoreError(f"log {self._key} exists already; writer ids are unique, so the store is damaged")

    def close(self) -> None:
        self._closed = True


def _new_writer_id() -> str:
    return f"{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
