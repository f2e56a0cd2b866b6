"""Log lines: ``<16 hex digits of blake3(json)> <json>\\n``, one entry each.

A log starts with a :class:`Header`; every later line is one entry:

* :class:`LogEntry` -- a record put under a name (``op: put``), or a name deleted (``op: del``,
  ``record is None``);
* :class:`PackedBlob` -- where a small blob lives in a pack (``op: blob``);
* :class:`SealedPack` -- its writer will never append to a pack again (``op: seal``);
* :class:`RootEntry` -- a blob kept without a name (``write_storage``), with the foreign digests
  it is known by (``op: root``); :class:`UnrootEntry` -- no longer kept (``op: unroot``).

Each kind is a frozen dataclass with one ``encode`` and one ``decode``; :func:`decode_entry` reads
any entry.  The writers' exact lines are encoded and decoded by the private fast paths in
``_fast``, everything else by strict JSON; both give the same bytes and the same entries.

Opening a store must not validate a million records to list a million names, so the index reads
lines with :func:`scan_entry` (a put's name and time only) and checks a put's fields with
:func:`record_from_fields` when its record is first used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import blake3

from ..errors import (
    CorruptObjectError,
    FormatError,
    InvalidDigestError,
    InvalidKeyError,
    InvalidNameError,
)
from . import _fast
from ._json import dumps, loads
from .layout import (
    DIGEST_RE,
    ID_RE,
    MAX_ALIASES,
    format_digest,
    is_alias,
    parse_digest,
    validate_alias,
)
from .marker import FORMAT_VERSION
from .names import BAD_COMPONENT_RE, MAX_NAME_BYTES, validate_name
from .records import MAX_INT, TensorRecord, validate_record

LOG_FORMAT_NAME = "tensorcas-log"
MAX_LINE_BYTES = 1 << 20
_CHECKSUM_LEN = 16

#: How a blob line's body starts: the index defers parsing these until a packed blob is looked up.
BLOB_LINE_START = _fast.BLOB_LINE_START

_PUT_KEYS = frozenset(("op", "t", "name", "dtype", "shape", "stride", "offset", "requires_grad", "blob", "nbytes"))
_DEL_KEYS = frozenset(("op", "t", "name"))
_BLOB_KEYS = frozenset(("op", "blob", "nbytes", "pack", "offset"))
_SEAL_KEYS = frozenset(("op", "pack"))
_ROOT_KEYS = frozenset(("op", "t", "blob", "nbytes", "aliases"))
_UNROOT_KEYS = frozenset(("op", "t", "blob"))
_HEADER_KEYS = frozenset(("format", "version", "writer"))


# -- framing -----------------------------------------------------------------------------------


def _frame(obj: dict[str, Any]) -> bytes:
    return _frame_body(dumps(obj))


def _checksum(body: bytes) -> bytes:
    """A line's checksum: the first 8 bytes of its body's BLAKE3 digest, in hex
    (``digest(8).hex()`` is the cheapest way to them; BLAKE3's shorter outputs are prefixes)."""
    return blake3.blake3(body).digest(_CHECKSUM_LEN // 2).hex().encode("ascii")


def _frame_body(body: bytes) -> bytes:
    return _checksum(body) + b" " + body + b"\n"


def _check_checksum(line: bytes, where: str) -> bytes:
    """The line's JSON body, once its length and checksum are found sound."""
    if len(line) > MAX_LINE_BYTES:
        raise CorruptObjectError(f"{where}: line of {len(line)} bytes exceeds the {MAX_LINE_BYTES}-byte limit")
    body = line[_CHECKSUM_LEN + 1 :]
    if line[_CHECKSUM_LEN : _CHECKSUM_LEN + 1] != b" " or _checksum(body) != line[:_CHECKSUM_LEN]:
        raise CorruptObjectError(f"{where}: checksum mismatch; the line is damaged")
    return body


def _unframe(line: bytes, where: str) -> dict[str, Any]:
    body = _check_checksum(line, where)
    try:
        obj = loads(body)
    except ValueError as exc:
        raise CorruptObjectError(f"{where}: invalid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise CorruptObjectError(f"{where}: expected a JSON object")
    return obj


def _check_int(obj: dict[str, Any], field: str, where: str) -> int:
    value = obj[field]
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise CorruptObjectError(f"{where}: {field} is {value!r}; expected an integer in [0, 2**63)")
    return value


def _checked(record: TensorRecord, where: str) -> TensorRecord:
    try:
        validate_record(record, check_name=False)
    except CorruptObjectError as exc:
        raise CorruptObjectError(f"{where}: {exc}") from None
    return record


# -- entry kinds -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """The first line of every log: the format, its version and the writer's id."""

    writer: str

    def encode(self) -> bytes:
        return _frame({"format": LOG_FORMAT_NAME, "version": FORMAT_VERSION, "writer": self.writer})

    @classmethod
    def decode(cls, line: bytes, where: str) -> Header:
        """A log's first line (without its newline); :class:`FormatError` for a version this
        release does not read, :class:`CorruptObjectError` for anything that is not a header."""
        obj = _unframe(line, where)
        if set(obj) != _HEADER_KEYS or obj["format"] != LOG_FORMAT_NAME:
            raise CorruptObjectError(f"{where}: first line is not a tensorcas log header")
        if type(obj["version"]) is not int or obj["version"] != FORMAT_VERSION:
            raise FormatError(f"{where}: log format version {obj['version']!r} is not supported; upgrade tensorcas")
        return cls(str(obj["writer"]))  # only a name: the log's key says which writer it is


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A record put under its name, or the name deleted (``record is None``), at ``time_ns``."""

    name: str
    time_ns: int
    record: TensorRecord | None

    def encode(self) -> bytes:
        if self.record is None:
            return _frame({"op": "del", "t": self.time_ns, "name": validate_name(self.name)})
        return _frame_body(_fast.put_body(self.record, self.time_ns))

    @classmethod
    def decode(cls, line: bytes, where: str) -> LogEntry:
        entry = decode_entry(line, where)
        if not isinstance(entry, LogEntry):
            raise CorruptObjectError(f"{where}: not a put or delete entry")
        return entry


@dataclass(frozen=True, slots=True)
class PackedBlob:
    """Where a small blob lives: ``nbytes`` bytes at ``offset`` in pack ``pack`` (an id; the key
    is ``layout.pack_key(pack)``)."""

    blob: str
    nbytes: int
    pack: str
    offset: int

    def encode(self) -> bytes:
        return _frame_body(_fast.blob_body(self.blob, self.nbytes, self.pack, self.offset))

    @classmethod
    def decode(cls, line: bytes, where: str) -> PackedBlob:
        """A blob entry, fully validated."""
        return cls(*decode_blob_fields(line, where))


@dataclass(frozen=True, slots=True)
class SealedPack:
    """Its writer will never append to pack ``pack`` again (it closed it), so gc may rewrite or
    delete the pack once nothing references what it holds."""

    pack: str

    def encode(self) -> bytes:
        if not ID_RE.match(self.pack):
            raise InvalidKeyError(f"invalid pack id {self.pack!r}")
        return _frame_body(_fast.seal_body(self.pack))

    @classmethod
    def decode(cls, line: bytes, where: str) -> SealedPack:
        entry = _decode_json(line, where)
        if not isinstance(entry, SealedPack):
            raise CorruptObjectError(f"{where}: not a seal entry")
        return entry


@dataclass(frozen=True, slots=True)
class RootEntry:
    """A blob made a *root*: kept by gc although no name references it (``write_storage``),
    until a newer :class:`UnrootEntry` of the same blob.  ``aliases`` are other digests the same
    bytes are known by (PyTorch's SHA-1 or fast hash, as ``torch:<hex>``)."""

    blob: str
    nbytes: int
    time_ns: int
    aliases: tuple[str, ...] = ()

    def encode(self) -> bytes:
        if not DIGEST_RE.match(self.blob):
            raise InvalidDigestError(f"{self.blob!r} is not a blake3: digest")
        for alias in self.aliases:
            validate_alias(alias)
        if len(self.aliases) > MAX_ALIASES:
            raise InvalidDigestError(f"at most {MAX_ALIASES} aliases per root, not {len(self.aliases)}")
        fields = {"op": "root", "t": self.time_ns, "blob": self.blob, "nbytes": self.nbytes}
        return _frame({**fields, "aliases": list(self.aliases)})

    @classmethod
    def decode(cls, line: bytes, where: str) -> RootEntry:
        entry = _decode_json(line, where)
        if not isinstance(entry, RootEntry):
            raise CorruptObjectError(f"{where}: not a root entry")
        return entry


@dataclass(frozen=True, slots=True)
class UnrootEntry:
    """A blob no longer kept as a root (removed on purpose)."""

    blob: str
    time_ns: int

    def encode(self) -> bytes:
        return _frame({"op": "unroot", "t": self.time_ns, "blob": format_digest(parse_digest(self.blob))})

    @classmethod
    def decode(cls, line: bytes, where: str) -> UnrootEntry:
        entry = _decode_json(line, where)
        if not isinstance(entry, UnrootEntry):
            raise CorruptObjectError(f"{where}: not an unroot entry")
        return entry


Entry = LogEntry | PackedBlob | SealedPack | RootEntry | UnrootEntry
#: The entries that are not about a name: complete as scanned.
Whole = PackedBlob | SealedPack | RootEntry | UnrootEntry
#: A put's fields not validated yet: the parsed JSON object, or the line itself (fast path).
Fields = dict[str, Any] | bytes
#: What :func:`scan_entry` gives for a put or delete: name, time, and the put's unchecked fields
#: (``None`` for a delete).  A plain tuple: the index makes one per line.
Scanned = tuple[str, int, Fields | None]


# -- decoding ----------------------------------------------------------------------------------


def decode_entry(line: bytes, where: str) -> Entry:
    """Parse and fully validate one log line after the header (without its newline)."""
    entry = scan_entry(line, where)
    if not isinstance(entry, tuple):
        return entry
    name, time_ns, fields = entry
    return LogEntry(name, time_ns, None if fields is None else record_from_fields(name, fields, where))


def scan_entry(line: bytes, where: str) -> Whole | Scanned:
    """Parse one log line and validate what ordering needs: a blob or seal entry whole, a put or
    delete entry's name and time.  A put's other fields are returned unchecked for
    :func:`record_from_fields` to check when the record is used.  The checksum is always checked."""
    start = _fast.put_start(line)
    if start is None:
        return _scan_json(line, where)
    _check_checksum(line, where)
    time_ns, name = start
    if time_ns > MAX_INT:
        raise CorruptObjectError(f"{where}: time {time_ns} is not below 2**63")
    if len(name) > MAX_NAME_BYTES or BAD_COMPONENT_RE.search(name):
        raise CorruptObjectError(f"{where}: tensor name {name[:80]!r} is not a valid name")
    return name, time_ns, line


def record_from_fields(name: str, fields: Fields, where: str) -> TensorRecord:
    """The validated record of a put entry returned by :func:`scan_entry`."""
    if isinstance(fields, bytes):
        record = _fast.put_record(name, fields)  # the line's checksum was checked when it was read
        if record is not None:
            return _checked(record, where)
        obj = _unframe(fields, where)
        if obj.get("op") != "put" or obj.keys() != _PUT_KEYS or obj["name"] != name:
            raise CorruptObjectError(f"{where}: not a put entry of tensor {name!r}")
        fields = obj
    return _record_from_json(name, fields, where)


def _record_from_json(name: str, obj: dict[str, Any], where: str) -> TensorRecord:
    shape, stride = obj["shape"], obj["stride"]
    if not isinstance(shape, list) or not isinstance(stride, list):
        raise CorruptObjectError(f"{where}: record of tensor {name!r}: shape and stride must be lists")
    record = TensorRecord(
        name=name,
        dtype=obj["dtype"],
        shape=tuple(shape),
        stride=tuple(stride),
        offset=obj["offset"],
        requires_grad=obj["requires_grad"],
        blob=obj["blob"],
        nbytes=obj["nbytes"],
    )
    return _checked(record, where)


def _scan_json(line: bytes, where: str) -> Whole | Scanned:
    """:func:`scan_entry` by strict JSON: the general path, for any line."""
    obj = _unframe(line, where)
    op = obj.get("op")
    if op == "blob":
        if obj.keys() != _BLOB_KEYS:
            raise CorruptObjectError(f"{where}: not a blob entry (keys {sorted(obj)[:12]})")
        blob, pack = obj["blob"], obj["pack"]
        if not isinstance(blob, str) or not DIGEST_RE.match(blob):
            raise CorruptObjectError(f"{where}: blob {blob!r} is not a blake3 digest")
        if not isinstance(pack, str) or not ID_RE.match(pack):
            raise CorruptObjectError(f"{where}: pack id {pack!r} is invalid")
        nbytes, offset = _check_int(obj, "nbytes", where), _check_int(obj, "offset", where)
        return PackedBlob(blob=blob, nbytes=nbytes, pack=pack, offset=offset)
    if op == "seal":
        if obj.keys() != _SEAL_KEYS or not isinstance(obj["pack"], str) or not ID_RE.match(obj["pack"]):
            raise CorruptObjectError(f"{where}: not a seal entry")
        return SealedPack(obj["pack"])
    if op in ("root", "unroot"):
        return _scan_root(obj, op, where)
    keys = _PUT_KEYS if op == "put" else _DEL_KEYS if op == "del" else None
    if keys is None or obj.keys() != keys:
        raise CorruptObjectError(f"{where}: not a put or delete entry (keys {sorted(obj)[:12]})")
    t = obj["t"]
    if type(t) is not int or not 0 <= t <= MAX_INT:
        raise CorruptObjectError(f"{where}: time {t!r} is not a non-negative integer")
    name = obj["name"]
    try:
        validate_name(name)
    except InvalidNameError as exc:
        raise CorruptObjectError(f"{where}: {exc}") from None
    return name, t, (obj if op == "put" else None)


def _scan_root(obj: dict[str, Any], op: str, where: str) -> RootEntry | UnrootEntry:
    if obj.keys() != (_ROOT_KEYS if op == "root" else _UNROOT_KEYS):
        raise CorruptObjectError(f"{where}: not a {op} entry (keys {sorted(obj)[:12]})")
    t, blob = obj["t"], obj["blob"]
    if type(t) is not int or not 0 <= t <= MAX_INT:
        raise CorruptObjectError(f"{where}: time {t!r} is not a non-negative integer")
    if not isinstance(blob, str) or not DIGEST_RE.match(blob):
        raise CorruptObjectError(f"{where}: blob {blob!r} is not a blake3 digest")
    if op == "unroot":
        return UnrootEntry(blob, t)
    nbytes, aliases = _check_int(obj, "nbytes", where), obj["aliases"]
    if not isinstance(aliases, list) or len(aliases) > MAX_ALIASES or not all(is_alias(a) for a in aliases):
        raise CorruptObjectError(f"{where}: aliases must be a list of at most {MAX_ALIASES} '<scheme>:<hex>' strings")
    return RootEntry(blob, nbytes, t, tuple(aliases))


def _decode_json(line: bytes, where: str) -> Entry:
    """:func:`decode_entry` by strict JSON only, never the fast paths: the reference they are
    tested against."""
    entry = _scan_json(line, where)
    if not isinstance(entry, tuple):
        return entry
    name, time_ns, fields = entry
    assert not isinstance(fields, bytes)
    return LogEntry(name, time_ns, None if fields is None else _record_from_json(name, fields, where))


# -- the writer's side, as functions (the hot path) ---------------------------------------------


def encode_header(writer_id: str) -> bytes:
    return Header(writer_id).encode()


def decode_header(line: bytes, where: str) -> None:
    Header.decode(line, where)


def encode_put(record: TensorRecord, time_ns: int) -> bytes:
    """``LogEntry(record.name, time_ns, record).encode()``, without making the entry."""
    return _frame_body(_fast.put_body(record, time_ns))


def encode_root(entry: RootEntry) -> bytes:
    return entry.encode()


def encode_unroot(digest: str, time_ns: int) -> bytes:
    return UnrootEntry(digest, time_ns).encode()


def encode_delete(name: str, time_ns: int) -> bytes:
    return LogEntry(name, time_ns, None).encode()


def encode_packed(packed: PackedBlob) -> bytes:
    return packed.encode()


def encode_seal(pack_id: str) -> bytes:
    return SealedPack(pack_id).encode()


def decode_blob_line(line: bytes, where: str) -> PackedBlob:
    return PackedBlob.decode(line, where)


def decode_blob_fields(line: bytes, where: str) -> tuple[str, int, str, int]:
    """``(blob, nbytes, pack, offset)`` of a blob line, fully validated: :meth:`PackedBlob.decode`
    without the object (an index of millions of packed blobs keeps plain tuples)."""
    fields = _fast.blob_fields(line)
    if fields is None:
        entry = _decode_json(line, where)
        if not isinstance(entry, PackedBlob):
            raise CorruptObjectError(f"{where}: not a blob entry")
        return entry.blob, entry.nbytes, entry.pack, entry.offset
    _check_checksum(line, where)
    if fields[1] > MAX_INT or fields[3] > MAX_INT:
        raise CorruptObjectError(f"{where}: nbytes or offset is not below 2**63")
    return fields
