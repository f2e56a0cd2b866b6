"""The record log, read: every writer's log, applied in order into an index of names.

Each writer appends to a log of its own (``logs/<writer>.log``), so any number of processes write
at once without locks.  The current record of a name is its newest entry over all logs (by time,
then log, then line); a delete entry hides the name.  Logs are read incrementally (only what was
appended since the last refresh), a bounded window at a time, whole lines only.

Everything read is validated (``format.entries.scan_entry``, then ``record_from_fields`` when a
record is first used), and damage is kept as findings for ``verify`` while undamaged names stay
readable.  Blob and seal lines go to the blob layer's :class:`PackIndex`.  Writing records is
``logwriter``'s business.
"""

from __future__ import annotations

import bisect
import gc
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from . import format as fmt
from .backends.base import Backend, ObjectInfo
from .blobs import PackIndex, damaged_line
from .errors import CorruptObjectError, Finding, StoreError, TensorNotFoundError, UnsafeFileError
from .format import PackedBlob, RootEntry, TensorRecord, UnrootEntry

#: The most bytes of a log read at once.
LOG_WINDOW = 16 << 20

#: The most bytes of lines split and applied at once (a window of one-byte lines would otherwise
#: become millions of objects at a time).
_APPLY_SLICE = 1 << 20

#: Damaged lines kept as examples per log; the others are only counted, so that a log of millions
#: of damaged lines costs bounded memory (docs/guarantees.md, promise 4).
MAX_FINDINGS_PER_LOG = 20

#: Where reads are worth sending at once (``Backend.parallel_reads``), the logs of a store are
#: read that many at a time, in batches of at most this many bytes and logs (bounded memory
#: however many logs a store has).
PREFETCH_BYTES = 64 << 20
PREFETCH_LOGS = 64

#: A log's first window of new bytes read ahead: (offset, bytes or None if gone), or the error.
_Fetched = tuple[int, bytes | None] | BaseException

#: No line shorter than a checksum, a space and ``{}`` can be sound.
_SHORTEST_LINE = 19

#: Where an entry sits in the global order, (time_ns, log key, line number): newer positions
#: win.  A plain tuple, so that comparing a million of them stays in C.
_Position = tuple[int, str, int]


@dataclass
class _LogState:
    offset: int = 0  # bytes consumed (whole lines only)
    lines: int = 0
    header_ok: bool = False
    rejected: bool = False  # its header is not one this release reads: ignored, for good
    damaged: int = 0  # damaged lines found, all counted (only the first few kept as examples)


class _IndexEntry:
    """A name's newest entry.  A put's fields are validated into a record on first use, so that
    opening a store and listing its names does not validate every record."""

    __slots__ = ("counted", "fields", "position", "record")

    def __init__(self, position: _Position, fields: dict[str, Any] | bytes | None) -> None:
        self.position = position
        self.fields = fields  # None: deleted
        self.record: TensorRecord | None = None
        self.counted = False  # its damage is counted in the findings already

    @property
    def deleted(self) -> bool:
        return self.fields is None


class RecordLog:
    """The names of one store and their records, as far as its logs have been read."""

    def __init__(self, backend: Backend, packs: PackIndex, lock: threading.RLock, *, strict: bool = False) -> None:
        self.backend = backend
        self.packs = packs
        #: Validate every record as the logs are read (verify), not only records when used.
        self.strict = strict
        self._lock = lock
        self._entries: dict[str, _IndexEntry] = {}
        self._logs: dict[str, _LogState] = {}
        #: How many refreshes have finished: a caller that saw this number can tell whether the
        #: logs were read since.
        self.refreshes = 0
        #: Logs read before that the last refresh did not find: the store was removed (and
        #: perhaps made again) or damaged; writers never remove a log they wrote a line to.
        self.lost_logs = 0
        #: Every name ever read, sorted, for queries under a prefix: made by the first one.
        self._sorted_names: _SortedNames | None = None
        self._problems: dict[tuple[str, int], Finding] = {}
        #: Each blob's newest root or unroot entry (``None``: unrooted), like names' entries.
        self._roots: dict[str, tuple[_Position, RootEntry | None]] = {}
        #: Each alias's newest root entry's blob.
        self._aliases: dict[str, tuple[_Position, str]] = {}
        # Damaged blob lines count against their log's examples like any other damaged line.
        packs.count_damage = self._count_damage

    @property
    def location(self) -> str:
        return self.backend.location

    # -- reading -------------------------------------------------------------------------------

    def refresh(self, listing: Iterable[tuple[str, ObjectInfo | None]] | None = None) -> None:
        """Read what was appended to any log since the last refresh.  ``listing``: the logs as
        ``backend.list_info`` gave them just now, if the caller listed them already."""
        with self._lock, _no_cyclic_gc():
            if listing is None:
                listing = self.backend.list_info(fmt.LOGS)
            items = sorted(listing, key=lambda item: item[0])
            present = {key for key, _ in items}
            self.lost_logs = sum(1 for key, st in self._logs.items() if st.offset and key not in present)
            for batch in self._batches(items):
                fetched = self._prefetch(batch)
                for key, listed in batch:
                    if fmt.is_log_key(key):
                        self._read_log(key, listed, fetched.get(key))
                    else:
                        self._check_log_shaped(key)
            self.refreshes += 1

    def _batches(
        self, items: list[tuple[str, ObjectInfo | None]]
    ) -> Iterator[list[tuple[str, ObjectInfo | None]]]:
        """``items`` in runs whose new log bytes, read at once, stay under ``PREFETCH_BYTES``."""
        if self.backend.parallel_reads <= 1:
            yield items
            return
        batch: list[tuple[str, ObjectInfo | None]] = []
        pending = 0
        for key, listed in items:
            new = self._new_bytes(key, listed)
            if batch and (pending + new > PREFETCH_BYTES or len(batch) >= PREFETCH_LOGS):
                yield batch
                batch, pending = [], 0
            batch.append((key, listed))
            pending += new
        if batch:
            yield batch

    def _new_bytes(self, key: str, listed: ObjectInfo | None) -> int:
        """The bytes of a listed log not read yet (its first window of them); 0 if unknown."""
        if listed is None or not fmt.is_log_key(key):
            return 0
        state = self._logs.get(key)
        offset = 0 if state is None else state.offset
        if state is not None and state.rejected:
            return 0
        return max(0, min(listed.size - offset, LOG_WINDOW))

    def _prefetch(self, batch: list[tuple[str, ObjectInfo | None]]) -> dict[str, _Fetched]:
        """The first window of new bytes of each log of ``batch``, read at once where the backend
        waits a round trip per read (an object store): a store of many logs opens in about the
        time of its largest log, not of all of them one after another.  Applied in order later,
        exactly as if each had been read then; a read that failed fails there."""
        wanted = [(key, listed) for key, listed in batch if self._new_bytes(key, listed) > 0]
        if self.backend.parallel_reads <= 1 or len(wanted) < 2:
            return {}

        def read(item: tuple[str, ObjectInfo | None]) -> tuple[str, _Fetched]:
            key, listed = item
            state = self._logs.get(key)
            offset = 0 if state is None else state.offset
            try:
                return key, (offset, self.backend.read_range(key, offset, self._new_bytes(key, listed)))
            except Exception as exc:  # raised when the log is applied, as a sequential read would
                return key, exc

        workers = min(self.backend.parallel_reads, len(wanted))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tensorcas-logs") as pool:
            return dict(pool.map(read, wanted))

    def _check_log_shaped(self, key: str) -> None:
        """A key below a directory that has a log's name: a log that is a directory, which
        cannot be read and may have held records (damage, like an unreadable log)."""
        top = "/".join(key.split("/", 2)[:2])
        if top != key and fmt.is_log_key(top) and (top, 0) not in self._problems:
            self._problems[(top, 0)] = Finding(
                "damaged-record", f"{top}: is a directory, not a log file; its records cannot be read"
            )

    def _read_log(self, key: str, listed: ObjectInfo | None = None, fetched: _Fetched | None = None) -> None:
        """Apply what was appended to one log since it was last read, a bounded window at a time
        (a log may be huge, or a hostile sparse file), whole lines only.  ``listed``: its size as
        the listing just gave it, if it did (else it is looked up); ``fetched``: its first window
        of new bytes, read already (see :meth:`_prefetch`)."""
        state = self._logs.setdefault(key, _LogState())
        if state.rejected:
            return
        try:
            info = listed if listed is not None else self.backend.stat(key)
        except UnsafeFileError as exc:
            # A log that cannot be read (a symlink, a FIFO...) may hold records: its blobs would
            # look unused, so it is damage that stops gc, never a log to skip quietly.
            self._problems[(key, 0)] = damaged_line(key, exc)
            return
        self._problems.pop((key, 0), None)
        size = 0 if info is None else info.size
        while size > state.offset:
            length = min(size - state.offset, LOG_WINDOW)
            if fetched is not None:
                if isinstance(fetched, BaseException):
                    raise fetched
                offset, prefetched = fetched
                fetched = None
                if offset == state.offset and prefetched is not None and len(prefetched) <= length:
                    data = prefetched
                else:
                    data = self.backend.read_range(key, state.offset, length) or b""
            else:
                # A backend that can tell where a sparse file's holes are reads around them.
                segments = self.backend.read_sparse(key, state.offset, length)
                if segments is not None:
                    if not self._apply_sparse(key, state, length, segments):
                        return
                    continue
                data = self.backend.read_range(key, state.offset, length) or b""
            end = data.rfind(b"\n") + 1
            if end == 0:
                if len(data) >= LOG_WINDOW:
                    self._reject_rest(key, state)
                elif data:
                    self._torn_tail(key, len(data))
                return
            self._apply_window(key, state, data, 0, end)
            state.offset += end
            if state.rejected:
                return
        self._problems.pop((key, -1), None)

    def _apply_window(self, key: str, state: _LogState, data: bytes, start: int, end: int) -> None:
        """Apply the whole lines ``data[start:end]``, in slices of about ``_APPLY_SLICE`` bytes."""
        while start < end and not state.rejected:
            stop = (
                data.rfind(b"\n", start, min(end, start + _APPLY_SLICE)) + 1
                or data.find(b"\n", start) + 1
            )
            self._apply_lines(key, state, data[start:stop])
            start = stop

    def _apply_sparse(
        self, key: str, state: _LogState, length: int, segments: list[tuple[int, bytes]]
    ) -> bool:
        """Apply a window of a sparse log given as its data ``segments`` (offset, bytes); the
        gaps between them are holes, which read as zeros.  No sound line holds a zero byte, so a
        line that reaches into a hole is damaged whatever else it holds: it is counted, not read.
        Lines are numbered, counted and reported exactly as if every zero had been read, while
        the work is that of the bytes really there.  ``False`` when reading this log stops."""
        line_has_hole = False  # the line being read reaches into a hole
        expected = state.offset
        found = False
        for position, data in segments:
            if position > expected:
                line_has_hole = True
            expected = position + len(data)
            first = data.find(b"\n")
            if first < 0:
                continue
            found = True
            start = 0
            if line_has_hole:
                number = state.lines + 1
                if self._count_damage(key, number):
                    self._problems[(key, number)] = Finding(
                        "damaged-record",
                        f"{key} line {number}: reaches into a hole of zero bytes (a sparse file); the line is damaged",
                    )
                state.lines += 1
                if not state.header_ok:
                    state.rejected = True  # its first line is not a header: ignored, for good
                    return False
                line_has_hole = False
                start = first + 1
            end = data.rfind(b"\n") + 1
            self._apply_window(key, state, data, start, end)
            state.offset = position + end
            if state.rejected:
                return False
        if not found:
            if length >= LOG_WINDOW:
                self._reject_rest(key, state)
            else:
                self._torn_tail(key, length)
            return False
        return True

    def _reject_rest(self, key: str, state: _LogState) -> None:
        # No line ends within a whole window: far past the line limit, not ours.
        number = state.lines + 1
        if self._count_damage(key, number):
            self._problems[(key, number)] = Finding(
                "damaged-record",
                f"{key} line {number}: no line end within {LOG_WINDOW} bytes; the rest of the log is ignored",
            )
        state.rejected = True

    def _torn_tail(self, key: str, nbytes: int) -> None:
        self._problems[(key, -1)] = Finding(
            "torn-tail",
            f"{key}: {nbytes} bytes after the last complete line (an interrupted write)",
            severity="warning",
        )

    def _count_damage(self, log: str, number: int) -> bool:
        """Count one damaged line of ``log``; whether to keep it as an example (only the first
        ``MAX_FINDINGS_PER_LOG`` of each log are; the caller then adds it to the findings)."""
        if (log, number) in self._problems or (log, number) in self.packs.problems:
            return False  # counted already
        state = self._logs.setdefault(log, _LogState())
        state.damaged += 1
        return state.damaged <= MAX_FINDINGS_PER_LOG

    def _apply_lines(self, key: str, state: _LogState, data: bytes) -> None:
        lines = data.split(b"\n")
        lines.pop()
        blob_start, packs, entries = fmt.BLOB_LINE_START, self.packs, self._entries
        sorted_names = self._sorted_names
        for number, line in enumerate(lines, state.lines + 1):
            # Blob lines are parsed only when a packed blob is looked up (PackIndex.all).
            if state.header_ok and line.startswith(blob_start, 17):
                packs.defer(line, key, number)
                continue
            try:
                if not state.header_ok:
                    fmt.decode_header(line, f"{key} line {number}")
                    state.header_ok = True
                    continue
                entry = fmt.scan_entry(line, "")
            except StoreError:
                if self._count_damage(key, number):
                    self._problems[(key, number)] = _rescan(line, f"{key} line {number}", state.header_ok)
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
                        if self._count_damage(key, number):
                            self._problems[(key, number)] = damaged_line(where, exc)
                current = entries.get(name)
                if current is None:
                    entries[name] = _IndexEntry(position, fields)
                    if sorted_names is not None:
                        sorted_names.add(name)
                elif current.position < position:
                    entries[name] = _IndexEntry(position, fields)
            elif isinstance(entry, PackedBlob):
                packs.add(entry)
            elif isinstance(entry, fmt.SealedPack):
                packs.seal(entry.pack)
            elif isinstance(entry, (RootEntry, UnrootEntry)):
                self._add_root(entry, (entry.time_ns, key, number))
        state.lines += len(lines)

    def _add_root(self, entry: RootEntry | UnrootEntry, position: _Position) -> None:
        current = self._roots.get(entry.blob)
        if current is None or current[0] < position:
            self._roots[entry.blob] = (position, entry if isinstance(entry, RootEntry) else None)
        if isinstance(entry, RootEntry):
            for alias in entry.aliases:
                known = self._aliases.get(alias)
                if known is None or known[0] < position:
                    self._aliases[alias] = (position, entry.blob)

    def _resolve(self, name: str, entry: _IndexEntry) -> TensorRecord:
        """The validated record of a put entry; damage is raised and kept for ``verify``."""
        if entry.record is None:
            assert entry.fields is not None
            _, log, number = entry.position
            where = f"{log} line {number}"
            try:
                entry.record = fmt.record_from_fields(name, entry.fields, where)
            except CorruptObjectError as exc:
                if not entry.counted and not self.strict:  # strict: counted as the log was read
                    entry.counted = True
                    if self._count_damage(log, number):
                        self._problems[(log, number)] = damaged_line(where, exc)
                raise CorruptObjectError(
                    f"tensor {name!r}: its record is damaged ({exc}); run 'tensorcas verify {self.location}'"
                ) from None
        return entry.record

    # -- queries -------------------------------------------------------------------------------

    def problems(self) -> list[Finding]:
        """Damage found in the logs read so far (blob lines included)."""
        self.packs.parse()
        with self._lock:
            out = list(self._problems.values()) + list(self.packs.problems.values())
            for log, state in sorted(self._logs.items()):
                if state.damaged > MAX_FINDINGS_PER_LOG:
                    hidden = state.damaged - MAX_FINDINGS_PER_LOG
                    out.append(
                        Finding(
                            "damaged-record",
                            f"{log}: {state.damaged} damaged lines in all; only the first "
                            f"{MAX_FINDINGS_PER_LOG} are listed (the other {hidden} are counted, not kept)",
                            count=hidden,
                        )
                    )
            return out

    def peek(self, name: str) -> TensorRecord | None:
        """The current record of ``name`` as far as the logs read so far say (no I/O)."""
        if type(name) is not str and isinstance(name, str):
            name = str.__str__(name)  # as in get: the subclass's own __eq__ must find nothing else
        entry = self._entries.get(name)
        if entry is None or entry.deleted:
            return None
        try:
            return self._resolve(name, entry)
        except CorruptObjectError:
            return None

    def get(self, name: str) -> TensorRecord:
        """The current record of ``name`` (the logs are read again if it is not known yet)."""
        # Every name in the index passed the name checks as its line was read: only a name not
        # found there is checked (for a clear error) before the logs are read again.
        if type(name) is not str:
            name = _plain(name)
        entry = self._entries.get(name)
        if entry is not None and entry.record is not None:
            return entry.record  # validated already
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.deleted:
                fmt.validate_name(name)
                self.refresh()
                entry = self._entries.get(name)
            if entry is None or entry.deleted:
                raise TensorNotFoundError(
                    f"no tensor named {name!r} in store {self.location}"
                    + (" (it was deleted)" if entry is not None else "")
                    + "; list the names with 'tensorcas ls'"
                )
            return self._resolve(name, entry)

    def has(self, name: str) -> bool:
        """Whether the logs read so far hold a current entry for ``name`` (a damaged record
        included): no I/O, for a caller that has just refreshed."""
        entry = self._entries.get(_plain(name) if type(name) is not str else name)
        return entry is not None and not entry.deleted

    def _live(self, prefix: str, refresh: bool = True) -> list[tuple[str, _IndexEntry]]:
        if type(prefix) is not str and isinstance(prefix, str):
            # The exact characters: a subclass's own ordering must not steer the binary search.
            prefix = str.__str__(prefix)
        fmt.validate_prefix(prefix)
        with self._lock:
            if refresh:
                self.refresh()
            entries = self._entries
            if prefix:
                # A query under a prefix costs the names under it, not every name in the store
                # (a checkpoint's chunks among a thousand checkpoints' chunks).
                if self._sorted_names is None:
                    self._sorted_names = _SortedNames(entries)
                live = [
                    (name, e)
                    for name in self._sorted_names.starting_with(prefix)
                    if not (e := entries[name]).deleted and fmt.name_matches(name, prefix)
                ]
            else:
                live = [(name, e) for name, e in entries.items() if not e.deleted]
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

    def names(self, prefix: str = "", *, refresh: bool = True) -> list[str]:
        """Current names under ``prefix``, in writing order, without validating their records.
        ``refresh=False``: as far as the logs read so far say (a caller that has just refreshed)."""
        return [name for name, _ in self._live(prefix, refresh)]

    def roots(self) -> dict[str, RootEntry]:
        """The current storage roots (blobs kept without a name), by digest, oldest first."""
        with self._lock:
            self.refresh()
            live = [(pos, entry) for pos, entry in self._roots.values() if entry is not None]
        live.sort(key=lambda pair: pair[0])
        return {entry.blob: entry for _, entry in live}

    def resolve_alias(self, alias: str) -> str | None:
        """The blake3 digest of the bytes known by the foreign digest ``alias`` (``torch:<hex>``)."""
        fmt.validate_alias(alias)
        with self._lock:
            found = self._aliases.get(alias)
            if found is None:
                self.refresh()
                found = self._aliases.get(alias)
        return None if found is None else found[1]

    def referenced_blobs(self) -> set[str]:
        """Every blob a current record or a current root uses: what gc must keep.  Records are
        validated on the way (damage lands in :meth:`problems`)."""
        with self._lock:
            blobs = {record.blob for record in self.records()}
            blobs.update(digest for digest, (_, entry) in self._roots.items() if entry is not None)
        return blobs

    def log_keys(self) -> list[str]:
        return sorted(k for k in self.backend.list(fmt.LOGS) if fmt.is_log_key(k))

    def log_bytes(self) -> int:
        """The size of every log together."""
        sizes = (self.backend.stat(key) for key in self.log_keys())
        return sum(info.size for info in sizes if info is not None)


class _SortedNames:
    """Names in sorted runs, for finding those that start with a prefix without looking at the
    others.  Names added since the last query become a run of their own at the next; runs are
    merged like the digits of a binary counter (a run is merged into the one before it while
    that one is at most twice its size), so each name is moved about log2(n) times in all and a
    query looks at about log2(n) runs.  A name is added once: the index never forgets one."""

    def __init__(self, names: Iterable[str]) -> None:
        self._runs: list[list[str]] = [sorted(names)]
        self._added: list[str] = []

    def add(self, name: str) -> None:
        self._added.append(name)

    def starting_with(self, prefix: str) -> Iterator[str]:
        """Every name that starts with ``prefix``, run after run (not in one sorted order)."""
        runs = self._runs
        if self._added:
            runs.append(sorted(self._added))
            self._added = []
            while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
                last = runs.pop()
                runs[-1] += last
                runs[-1].sort()  # two sorted runs: one merge
        for run in runs:
            i = bisect.bisect_left(run, prefix)
            while i < len(run) and run[i].startswith(prefix):
                yield run[i]
                i += 1


def _rescan(line: bytes, where: str, header_ok: bool) -> Finding:
    """The finding of a line that failed a quick scan, with its location in the message."""
    try:
        fmt.scan_entry(line, where) if header_ok else fmt.decode_header(line, where)
    except StoreError as exc:
        return damaged_line(where, exc)
    return Finding("damaged-record", f"{where}: damaged")


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


def _plain(name: object) -> str:
    """``name`` as a plain ``str``, checked: a subclass's own ``__eq__`` and ``__hash__`` must
    not find (and then name) another tensor's record, nor its own ``encode`` pass the checks."""
    if isinstance(name, str):
        name = str.__str__(name)  # an exact copy of the characters, whatever the subclass says
    return fmt.validate_name(name)
