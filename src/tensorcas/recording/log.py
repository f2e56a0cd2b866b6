"""A recording's tensors and the order they were produced in.

A recording is every tensor written under one prefix, plus an *index*: JSON documents stored as
uint8 tensors under ``PREFIX/index/000000``, ``PREFIX/index/000001``, ...  Each segment lists, in
execution order, the tensors recorded since the previous one (their names below the prefix and
what they are).  Segments are written at each step boundary and when the recording ends, so a
long run never rewrites what it already wrote, and a run killed halfway keeps the order of every
finished step.

Why an index, when the store already keeps names in writing order: a name written twice keeps
its first place, background writes finish on another thread, and two recordings may share a
store; the index says exactly what this recording saw, in the order it saw it.  Readers fall back
to the store's writing order for names the index does not list (the unfinished last step of a
killed run).

The index is read as untrusted data: its size is bounded, it is parsed as strict JSON (never
unpickled) and every field is type-checked before use.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

import torch

from .. import format as fmt
from ..errors import RecordingError, UnsupportedTensorError
from ..hashing import cpu_storage_view
from ..reader import ContentStoreReader
from ..store import Location
from ..writer import ContentStoreWriter

INDEX = "index"
#: Names below a recording's prefix that describe it rather than hold its tensors.
GRAPHS = "graphs"
FORMAT = "tensorcas-recording"
VERSION = 1
#: Largest index segment or graph description a reader accepts: it bounds what a hostile store
#: can make a reader parse (and hold as Python objects, several times the JSON's size).
MAX_SEGMENT_BYTES = 64 << 20
#: Writers start a new segment beyond about this much JSON (a step with many records is split).
SEGMENT_TARGET_BYTES = 8 << 20
_SEGMENT_RE = re.compile(r"[0-9]{6,}\Z")
_KINDS = frozenset({"input", "output", "op", "param", "grad", "node", "tensor"})


#: (store location, prefix) of the recordings open in this process: two at once would mix names.
_ACTIVE: set[tuple[str, str]] = set()
_ACTIVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Entry:
    """One recorded tensor: its name below the recording's prefix, its kind and its step (or
    graph call).  ``same_as`` is set for a tensor recorded as the very tensor recorded earlier
    (not stored twice): the full store name that holds it."""

    key: str
    kind: str
    step: int
    same_as: str | None = None


def check_prefix(prefix: str) -> str:
    """A recording's prefix without its trailing ``/``; it must be a valid, non-empty name."""
    stripped = prefix.rstrip("/") if isinstance(prefix, str) else prefix
    if not stripped:
        raise RecordingError("a recording needs a non-empty prefix, such as 'run-a'")
    return fmt.validate_name(stripped)


def join(prefix: str, key: str) -> str:
    return f"{prefix.rstrip('/')}/{key}"


class RecordingLog:
    """Writes tensors under a prefix and keeps their execution order in index segments.

    Thread-safe: hooks may fire on more than one thread (autograd's backward)."""

    def __init__(
        self,
        loc: Location,
        prefix: str,
        *,
        background: bool = True,
        max_pending_bytes: int = 1 << 30,
    ) -> None:
        self.prefix = prefix = check_prefix(prefix)
        self.writer = ContentStoreWriter(
            loc, background=background, max_pending_bytes=max_pending_bytes
        )
        self._key = (self.writer.location, prefix)
        with _ACTIVE_LOCK:
            if self._key in _ACTIVE:
                self.writer.close()
                raise RecordingError(
                    f"a recording under {prefix!r} in {self.writer.location} is already running in "
                    "this process; close it first or record under another prefix"
                )
            _ACTIVE.add(self._key)
        self._pending: list[Entry] = []
        self._segment = 0
        self._lock = threading.Lock()
        #: (name, reason) of tensors that could not be stored (subclasses, sparse, meta...).
        self.skipped: list[tuple[str, str]] = []
        self.written = 0

    @property
    def location(self) -> str:
        return self.writer.location

    def write_document(self, key: str, doc: dict[str, Any]) -> None:
        """Store ``doc`` as strict JSON in a uint8 tensor under ``PREFIX/key`` (not in the index)."""
        data = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
        self.writer.write_tensor(join(self.prefix, key), bytes_tensor(data))

    def write(self, key: str, tensor: torch.Tensor, kind: str, step: int) -> bool:
        """Record ``tensor`` as ``PREFIX/key``; returns False (and notes why) if it cannot be."""
        name = join(self.prefix, key)
        try:
            self.writer.write_tensor(name, tensor.detach())
        except UnsupportedTensorError as exc:
            with self._lock:
                self.skipped.append((name, str(exc)))
            return False
        with self._lock:
            self._pending.append(Entry(key, kind, step))
            self.written += 1
        return True

    def alias(self, key: str, original: str, kind: str, step: int) -> None:
        """Record ``PREFIX/key`` as the same tensor as ``PREFIX/original`` without storing it."""
        with self._lock:
            self._pending.append(Entry(key, kind, step, original))

    def write_index(self) -> None:
        """Write the entries recorded since the last segment as the next segment(s); a segment
        holds at most about ``SEGMENT_TARGET_BYTES`` of JSON, far below what readers accept."""
        with self._lock:
            entries, self._pending = self._pending, []
            chunks: list[list[list[Any]]] = [[]]
            size = 0
            for e in entries:
                item: list[Any] = [e.key, e.kind, e.step]
                if e.same_as is not None:
                    item.append(e.same_as)
                cost = len(e.key) + len(e.same_as or "") + 32
                if chunks[-1] and size + cost > SEGMENT_TARGET_BYTES:
                    chunks.append([])
                    size = 0
                chunks[-1].append(item)
                size += cost
            first = self._segment
            if entries:
                self._segment += len(chunks)
        if not entries:
            return
        for i, chunk in enumerate(chunks):
            doc = {"format": FORMAT, "version": VERSION, "entries": chunk}
            self.write_document(f"{INDEX}/{first + i:06d}", doc)

    def close(self) -> None:
        """Write the last index segment, wait for every background write, close the writer."""
        try:
            self.write_index()
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.discard(self._key)
            self.writer.close()


def read_order(reader: ContentStoreReader, prefix: str) -> list[Entry]:
    """The tensors of the recording under ``prefix`` in execution order, named below it.

    The index's entries come first (those whose tensor is still stored), then any other name under
    the prefix in the store's writing order, with kind ``tensor``: a recording made by hand, or the
    last step of a run killed before it wrote its index.  A prefix inside a recording
    (``run-a/step3``) uses the enclosing recording's index.
    """
    prefix = prefix.rstrip("/")
    fmt.validate_prefix(prefix)
    parts = prefix.split("/") if prefix else []
    root = prefix
    if parts and not reader.list_tensors(f"{prefix}/{INDEX}/"):
        for cut in range(len(parts) - 1, 0, -1):
            candidate = "/".join(parts[:cut])
            if reader.list_tensors(f"{candidate}/{INDEX}/"):
                root = candidate
                break
    entries = _order_of(reader, root)
    if root == prefix:
        return entries
    below = prefix[len(root) + 1 :] + "/"
    return [
        Entry(e.key[len(below) :], e.kind, e.step, e.same_as)
        for e in entries
        if e.key.startswith(below)
    ]


def _order_of(reader: ContentStoreReader, prefix: str) -> list[Entry]:
    base = f"{prefix}/" if prefix else ""
    names = reader.list_tensors(base)
    index_base = f"{base}{INDEX}/"
    segments = sorted(
        (n for n in names if n.startswith(index_base) and _SEGMENT_RE.match(n[len(index_base) :])),
        key=lambda n: int(n[len(index_base) :]),
    )
    meta = (index_base, f"{base}{GRAPHS}/")
    present = {n[len(base) :] for n in names if not n.startswith(meta)}
    entries: list[Entry] = []
    seen: set[str] = set()
    for segment in segments:
        for entry in _read_segment(reader, segment):
            if entry.key in seen:
                continue
            if entry.same_as is None and entry.key in present:
                seen.add(entry.key)
                entries.append(entry)
            elif entry.same_as is not None and entry.same_as in present:
                seen.add(entry.key)
                entries.append(Entry(entry.key, entry.kind, entry.step, base + entry.same_as))
    for name in names:
        key = name[len(base) :]
        if not name.startswith(meta) and key not in seen:
            seen.add(key)
            entries.append(Entry(key, "tensor", _step_of(key)))
    return entries


def _step_of(key: str) -> int:
    match = re.match(r"(?:step|graph)([0-9]+)/", key)
    return int(match.group(1)) if match else 0


def read_document(reader: ContentStoreReader, name: str, what: str, form: str) -> dict[str, Any]:
    """A JSON document stored as a uint8 tensor, checked for size, strict JSON, form and version."""
    record = reader.read_tensor_metadata(name)
    if record.dtype != "uint8" or len(record.shape) != 1 or record.view_nbytes > MAX_SEGMENT_BYTES:
        raise RecordingError(
            f"{what} {name!r} is not a 1-D uint8 tensor of at most {MAX_SEGMENT_BYTES} bytes "
            f"(it is {record.dtype} {list(record.shape)}); it was not written by tensorcas.record"
        )
    data = tensor_bytes(reader.read_tensor(name))
    try:
        doc: Any = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordingError(f"{what} {name!r} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != form:
        raise RecordingError(f"{what} {name!r} is not a {form} document")
    if doc.get("version") != VERSION:
        raise RecordingError(
            f"{what} {name!r} has version {doc.get('version')!r}; this release reads version "
            f"{VERSION}: upgrade tensorcas"
        )
    return doc


def _read_segment(reader: ContentStoreReader, name: str) -> list[Entry]:
    doc = read_document(reader, name, "recording index", FORMAT)
    raw = doc.get("entries")
    if not isinstance(raw, list):
        raise RecordingError(f"recording index {name!r} has no list of entries")
    out = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) not in (3, 4)
            or not isinstance(item[0], str)
            or item[1] not in _KINDS
            or type(item[2]) is not int
            or (len(item) == 4 and not isinstance(item[3], str))
        ):
            raise RecordingError(
                f"recording index {name!r} holds a malformed entry: {str(item)[:200]}"
            )
        out.append(Entry(item[0], item[1], item[2], item[3] if len(item) == 4 else None))
    return out


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The bytes of a 1-D uint8 tensor (a JSON or text document stored as a tensor)."""
    copy = tensor.detach().to("cpu", torch.uint8).clone()  # its own storage, exactly its elements
    storage = copy.untyped_storage()
    return bytes(cpu_storage_view(storage))


def bytes_tensor(data: bytes) -> torch.Tensor:
    """``data`` as a 1-D uint8 tensor, to store a document under a name."""
    return (
        torch.frombuffer(bytearray(data), dtype=torch.uint8)
        if data
        else torch.empty(0, dtype=torch.uint8)
    )


def _refuse_constant(value: str) -> Any:
    raise ValueError(f"{value} is not allowed in strict JSON")
