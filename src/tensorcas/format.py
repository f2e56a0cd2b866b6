"""The on-disk schema: names, digests, records and the store marker, and their validation.

Everything here treats its input as hostile.  Records are JSON lines guarded by a checksum; each
field is checked for its exact type (a ``bool`` is not an ``int``), its range and its form before
any other layer sees it, and views are checked against the blob's true size in Python integers.
This module knows nothing of torch beyond the dtype table, and nothing of where bytes live.
See ``docs/FORMAT.md`` for the specification this code implements.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import blake3

from .errors import CorruptObjectError, FormatError, InvalidDigestError, InvalidNameError

if TYPE_CHECKING:
    import torch

FORMAT_NAME = "tensorcas"
FORMAT_VERSION = 1
LOG_FORMAT_NAME = "tensorcas-log"
DIGEST_ALGORITHM = "blake3"

MAX_NAME_BYTES = 4096
MAX_NDIM = 64
MAX_LINE_BYTES = 1 << 20
MAX_META_BYTES = 1 << 16
MAX_INT = (1 << 63) - 1

_DIGEST_RE = re.compile(r"blake3:[0-9a-f]{64}\Z")
_HEX_RE = re.compile(r"[0-9a-f]{64}\Z")
_WRITER_ID_RE = re.compile(r"[0-9a-z][0-9a-z._-]{0,127}\Z")
_CHECKSUM_LEN = 16

# ---------------------------------------------------------------------------------------------
# dtypes: a stable string per dtype, and an allow-list.  Only dtypes with a fixed item size whose
# bytes are the whole value are storable; quantized dtypes carry scale/zero-point outside the bytes.
#
# The table is static (name: item size, kind) so that reading records, listing and verifying never
# import torch; the ``torch.dtype`` objects are looked up on first use (``DTYPES``, ``DTYPE_NAMES``).
_DTYPE_INFO: dict[str, tuple[int, str]] = {
    "bool": (1, "bool"),
    "uint8": (1, "int"),
    "int8": (1, "int"),
    "int16": (2, "int"),
    "int32": (4, "int"),
    "int64": (8, "int"),
    "uint16": (2, "int"),
    "uint32": (4, "int"),
    "uint64": (8, "int"),
    "float16": (2, "float"),
    "bfloat16": (2, "float"),
    "float32": (4, "float"),
    "float64": (8, "float"),
    "complex32": (4, "complex"),
    "complex64": (8, "complex"),
    "complex128": (16, "complex"),
    "float8_e4m3fn": (1, "float"),
    "float8_e4m3fnuz": (1, "float"),
    "float8_e5m2": (1, "float"),
    "float8_e5m2fnuz": (1, "float"),
    "float8_e8m0fnu": (1, "float"),
    "float4_e2m1fn_x2": (1, "float"),
}
_DTYPE_NAMES = tuple(_DTYPE_INFO)
_torch_tables: tuple[dict[str, torch.dtype], dict[torch.dtype, str]] | None = None


def _tables() -> tuple[dict[str, torch.dtype], dict[torch.dtype, str]]:
    """``DTYPES`` and ``DTYPE_NAMES``, built (importing torch) on first use."""
    global _torch_tables
    if _torch_tables is None:
        import torch

        by_name = {
            name: getattr(torch, name)
            for name in _DTYPE_NAMES
            if isinstance(getattr(torch, name, None), torch.dtype)
        }
        _torch_tables = by_name, {dtype: name for name, dtype in by_name.items()}
    return _torch_tables


def __getattr__(name: str) -> Any:
    # ``DTYPES`` (stable name -> torch.dtype, for the dtypes this torch has) and ``DTYPE_NAMES``
    # (the reverse) are built on first access, so that importing this module does not import torch.
    if name == "DTYPES":
        return _tables()[0]
    if name == "DTYPE_NAMES":
        return _tables()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dtype_name(dtype: torch.dtype) -> str | None:
    """The stable name of ``dtype``, or ``None`` if it cannot be stored."""
    return _tables()[1].get(dtype)


def torch_dtype(dtype_name_: str) -> torch.dtype:
    """The ``torch.dtype`` of a stored dtype name (imports torch)."""
    found = _tables()[0].get(dtype_name_)
    if found is None:
        raise FormatError(
            f"dtype {dtype_name_!r} is not available in this version of torch; upgrade torch to read it"
        )
    return found


def itemsize(dtype_name_: str) -> int:
    return _DTYPE_INFO[dtype_name_][0]


def is_floating_or_complex(dtype_name_: str) -> bool:
    return _DTYPE_INFO[dtype_name_][1] in ("float", "complex")


# ---------------------------------------------------------------------------------------------
# names


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid tensor name, else raise :class:`InvalidNameError`.

    Names are ``/``-separated paths of non-empty components (``model/layer.0/weight``).  Names never
    become file paths, but they are still held to rules that keep them portable and unambiguous:
    no empty component, no ``.`` or ``..``, no leading or trailing ``/``, no backslash, no NUL or
    other control character, at most 4096 bytes of UTF-8.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"tensor name must be a str, not {type(name).__name__}: {name!r}")
    if not name:
        raise InvalidNameError("tensor name is empty; use a non-empty name such as 'model/weight'")
    _check_path_like(name, "tensor name")
    return name


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it can select names (``''``, ``'model'`` or ``'model/'``)."""
    if not isinstance(prefix, str):
        raise InvalidNameError(f"prefix must be a str, not {type(prefix).__name__}: {prefix!r}")
    if prefix:
        _check_path_like(prefix[:-1] if prefix.endswith("/") else prefix, "prefix")
    return prefix


_BAD_CHAR_RE = re.compile(r"[\x00-\x1f\x7f\\]")
_BAD_COMPONENT_RE = re.compile(r"(?:^|/)\.{0,2}(?:/|$)")


def _check_path_like(name: str, what: str) -> None:
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidNameError(f"{what} {name!r} is not valid UTF-8: {exc.reason}") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidNameError(f"{what} {name[:60]!r}... is {len(encoded)} bytes; the limit is {MAX_NAME_BYTES}")
    bad = _BAD_CHAR_RE.search(name)
    if bad is not None:
        raise InvalidNameError(
            f"{what} {name!r} contains {bad.group()!r}; names may not hold backslashes or control characters"
        )
    if _BAD_COMPONENT_RE.search(name):
        raise InvalidNameError(
            f"{what} {name!r} has an empty, '.' or '..' component; "
            "use '/'-separated non-empty parts such as 'model/layer.0/weight'"
        )


def name_matches(name: str, prefix: str) -> bool:
    """Whether ``name`` lies under ``prefix``: the name itself, or below it as a directory."""
    if not prefix:
        return True
    if prefix.endswith("/"):
        return name.startswith(prefix)
    return name == prefix or name.startswith(prefix + "/")


# ---------------------------------------------------------------------------------------------
# digests and the layout of keys: one place knows how a digest becomes a key and back.


def parse_digest(digest: object) -> str:
    """Return the 64 hex digits of a ``blake3:<hex>`` digest (bare hex is accepted too)."""
    if isinstance(digest, str):
        if _DIGEST_RE.match(digest):
            return digest[7:]
        if _HEX_RE.match(digest):
            return digest
    raise InvalidDigestError(
        f"{digest!r} is not a digest; expected 'blake3:' followed by 64 lowercase hex digits"
    )


def format_digest(hex_digest: str) -> str:
    return f"{DIGEST_ALGORITHM}:{hex_digest}"


def blob_key(digest: str) -> str:
    """The backend key of a blob: ``blobs/<first two hex digits>/<other 62>``."""
    hex_digest = parse_digest(digest)
    return f"blobs/{hex_digest[:2]}/{hex_digest[2:]}"


def key_to_digest(key: str) -> str | None:
    """The digest a blob key stands for, or ``None`` if the key is not a blob's."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "blobs" or len(parts[1]) != 2:
        return None
    hex_digest = parts[1] + parts[2]
    return format_digest(hex_digest) if _HEX_RE.match(hex_digest) else None


def pack_key(pack_id: str) -> str:
    """The backend key of a pack: an append-only file of small blobs written by one writer."""
    if not _WRITER_ID_RE.match(pack_id):
        raise FormatError(f"invalid pack id {pack_id!r}")
    return f"packs/{pack_id}.pack"


def is_pack_key(key: str) -> bool:
    parts = key.split("/")
    return (
        len(parts) == 2
        and parts[0] == "packs"
        and parts[1].endswith(".pack")
        and bool(_WRITER_ID_RE.match(parts[1][:-5]))
    )


def log_key(writer_id: str) -> str:
    if not _WRITER_ID_RE.match(writer_id):
        raise FormatError(f"invalid writer id {writer_id!r}")
    return f"logs/{writer_id}.log"


def is_log_key(key: str) -> bool:
    parts = key.split("/")
    return (
        len(parts) == 2
        and parts[0] == "logs"
        and parts[1].endswith(".log")
        and bool(_WRITER_ID_RE.match(parts[1][:-4]))
    )


# ---------------------------------------------------------------------------------------------
# the store marker


META_KEY = "tensorcas.json"


def encode_meta() -> bytes:
    return _dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION, "digest": DIGEST_ALGORITHM}) + b"\n"


def validate_meta(data: bytes, where: str) -> None:
    """Check a store marker; raise :class:`FormatError` for anything but a version-1 store."""
    if len(data) > MAX_META_BYTES:
        raise FormatError(f"{where}: store marker is {len(data)} bytes; not a tensorcas store")
    try:
        obj = _loads(data)
    except ValueError as exc:
        raise FormatError(f"{where}: store marker is not valid JSON ({exc}); not a tensorcas store") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: store marker does not say format 'tensorcas'; not a tensorcas store")
    version = obj.get("version")
    if type(version) is not int:
        raise FormatError(f"{where}: store marker has no integer version")
    if version != FORMAT_VERSION:
        raise FormatError(
            f"{where}: store format version {version} is not supported by this release "
            f"(it reads version {FORMAT_VERSION}); upgrade tensorcas to open it"
        )
    if obj.get("digest") != DIGEST_ALGORITHM:
        raise FormatError(f"{where}: store uses digest {obj.get('digest')!r}; this release supports 'blake3'")


# ---------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class TensorRecord:
    """What a name stands for: a view (dtype, shape, stride, offset in elements) of one blob."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    requires_grad: bool
    blob: str
    nbytes: int

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def view_nbytes(self) -> int:
        """Bytes the tensor's own elements cover (its logical size)."""
        return self.numel * itemsize(self.dtype)


@dataclass(frozen=True)
class LogEntry:
    """One line of a log: a record put under its name, or a name deleted (``record is None``)."""

    name: str
    time_ns: int
    record: TensorRecord | None


@dataclass(frozen=True)
class PackedBlob:
    """One line of a log saying where a small blob lives: ``nbytes`` bytes at ``offset`` in a pack."""

    blob: str
    nbytes: int
    pack: str  # pack id; the key is pack_key(pack)
    offset: int


@dataclass(frozen=True)
class RootEntry:
    """One line of a log making a blob a *root*: kept by gc although no name references it
    (``write_storage``), until a newer ``unroot`` entry of the same blob.  ``aliases`` are other
    digests the same bytes are known by (PyTorch's SHA-1 or fast hash, as ``torch:<hex>``)."""

    blob: str
    nbytes: int
    time_ns: int
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnrootEntry:
    """One line of a log saying a blob is no longer a root (removed on purpose)."""

    blob: str
    time_ns: int


#: A foreign digest kept as an alias: ``<scheme>:<hex>``, e.g. ``torch:<sha1 hex>``.
_ALIAS_RE = re.compile(r"[a-z][a-z0-9]{0,15}:[0-9a-f]{1,128}\Z")
MAX_ALIASES = 16


def validate_alias(alias: object) -> str:
    """An alias (``torch:<hex>``) checked for form; ``InvalidDigestError`` otherwise."""
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias):
        raise InvalidDigestError(
            f"invalid digest alias {alias!r}: expected '<scheme>:<lowercase hex>', such as 'torch:<sha1 hex>'"
        )
    return alias


def required_nbytes(dtype: str, shape: tuple[int, ...], stride: tuple[int, ...], offset: int) -> int:
    """The smallest blob size (bytes) that holds every element of the view."""
    size = itemsize(dtype)
    if any(s == 0 for s in shape):
        return offset * size
    last = offset + sum((s - 1) * st for s, st in zip(shape, stride))
    return (last + 1) * size


def make_record(
    name: str,
    dtype: torch.dtype,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
    offset: int,
    requires_grad: bool,
    blob: str,
    nbytes: int,
) -> TensorRecord:
    """A record for a tensor being written: torch guarantees the field types and bounds, and the
    name was validated by the caller, so only the view's bounds are checked again (cheaply)."""
    record = TensorRecord(
        name=name,
        dtype=_tables()[1][dtype],
        shape=tuple(shape),
        stride=tuple(stride),
        offset=offset,
        requires_grad=requires_grad,
        blob=blob,
        nbytes=nbytes,
    )
    if required_nbytes(record.dtype, record.shape, record.stride, offset) > nbytes:
        raise CorruptObjectError(f"tensor {name!r}: its view reaches past the end of its storage")
    return record


def validate_record(record: TensorRecord, *, check_name: bool = True) -> None:
    """Check every field's type and range, and the view's bounds against ``record.nbytes``."""
    where = f"record of tensor {record.name!r}"
    if check_name:
        validate_name(record.name)
    if not isinstance(record.dtype, str) or record.dtype not in _DTYPE_INFO:
        raise CorruptObjectError(f"{where}: dtype {record.dtype!r} is not one tensorcas can load")
    for field, value in (("shape", record.shape), ("stride", record.stride)):
        if not isinstance(value, tuple) or len(value) > MAX_NDIM:
            raise CorruptObjectError(f"{where}: {field} must be a list of at most {MAX_NDIM} integers")
        for v in value:
            if type(v) is not int or not 0 <= v <= MAX_INT:
                raise CorruptObjectError(f"{where}: {field} holds {v!r}; expected integers in [0, 2**63)")
    if len(record.shape) != len(record.stride):
        raise CorruptObjectError(f"{where}: shape {record.shape} and stride {record.stride} differ in length")
    for field, number in (("offset", record.offset), ("nbytes", record.nbytes)):
        if type(number) is not int or not 0 <= number <= MAX_INT:
            raise CorruptObjectError(f"{where}: {field} is {number!r}; expected an integer in [0, 2**63)")
    if type(record.requires_grad) is not bool:
        raise CorruptObjectError(f"{where}: requires_grad is {record.requires_grad!r}; expected true or false")
    if record.requires_grad and not is_floating_or_complex(record.dtype):
        raise CorruptObjectError(f"{where}: requires_grad is set on a {record.dtype} tensor")
    if not isinstance(record.blob, str) or not _DIGEST_RE.match(record.blob):
        raise CorruptObjectError(f"{where}: blob {record.blob!r} is not a blake3 digest")
    numel = 1
    for s in record.shape:
        numel *= s
    if numel > MAX_INT:
        raise CorruptObjectError(f"{where}: shape {record.shape} has more than 2**63 elements")
    need = required_nbytes(record.dtype, record.shape, record.stride, record.offset)
    if need > record.nbytes:
        raise CorruptObjectError(
            f"{where}: the view (shape {record.shape}, stride {record.stride}, offset {record.offset}) "
            f"needs {need} bytes but blob {record.blob} has {record.nbytes}"
        )


# ---------------------------------------------------------------------------------------------
# log lines: "<16 hex digits of blake3(json)> <json>\n"


def encode_header(writer_id: str) -> bytes:
    return _frame({"format": LOG_FORMAT_NAME, "version": FORMAT_VERSION, "writer": writer_id})


def encode_put(record: TensorRecord, time_ns: int) -> bytes:
    # Formatted by hand because this is the hot path of writing many small tensors; the result is
    # byte-identical to _dumps() of the same fields in this order (tests check that).
    body = (
        f'{{"op":"put","t":{time_ns},"name":{_json_str(record.name)},"dtype":"{record.dtype}",'
        f'"shape":[{",".join(map(str, record.shape))}],"stride":[{",".join(map(str, record.stride))}],'
        f'"offset":{record.offset},"requires_grad":{"true" if record.requires_grad else "false"},'
        f'"blob":"{record.blob}","nbytes":{record.nbytes}}}'
    ).encode("ascii")
    return _frame_body(body)


def encode_packed(packed: PackedBlob) -> bytes:
    # Hand-formatted like encode_put, byte-identical to _dumps() of these fields in this order.
    body = (
        f'{{"op":"blob","blob":"{packed.blob}","nbytes":{packed.nbytes},'
        f'"pack":"{packed.pack}","offset":{packed.offset}}}'
    ).encode("ascii")
    return _frame_body(body)


@dataclass(frozen=True)
class SealedPack:
    """One line of a log saying its writer will never append to a pack again (it closed it), so
    gc may rewrite or delete the pack once nothing references what it holds."""

    pack: str


def encode_seal(pack_id: str) -> bytes:
    if not _WRITER_ID_RE.match(pack_id):
        raise FormatError(f"invalid pack id {pack_id!r}")
    return _frame_body(f'{{"op":"seal","pack":"{pack_id}"}}'.encode("ascii"))


def encode_root(entry: RootEntry) -> bytes:
    if not _DIGEST_RE.match(entry.blob):
        raise InvalidDigestError(f"{entry.blob!r} is not a blake3: digest")
    for alias in entry.aliases:
        validate_alias(alias)
    if len(entry.aliases) > MAX_ALIASES:
        raise FormatError(f"at most {MAX_ALIASES} aliases per root, not {len(entry.aliases)}")
    return _frame(
        {
            "op": "root",
            "t": entry.time_ns,
            "blob": entry.blob,
            "nbytes": entry.nbytes,
            "aliases": list(entry.aliases),
        }
    )


def encode_unroot(digest: str, time_ns: int) -> bytes:
    return _frame({"op": "unroot", "t": time_ns, "blob": format_digest(parse_digest(digest))})


def encode_delete(name: str, time_ns: int) -> bytes:
    return _frame({"op": "del", "t": time_ns, "name": validate_name(name)})


_PUT_KEYS = frozenset(("op", "t", "name", "dtype", "shape", "stride", "offset", "requires_grad", "blob", "nbytes"))
_DEL_KEYS = frozenset(("op", "t", "name"))
_BLOB_KEYS = frozenset(("op", "blob", "nbytes", "pack", "offset"))
_SEAL_KEYS = frozenset(("op", "pack"))
_ROOT_KEYS = frozenset(("op", "t", "blob", "nbytes", "aliases"))
_UNROOT_KEYS = frozenset(("op", "t", "blob"))
_HEADER_KEYS = frozenset(("format", "version", "writer"))


def decode_header(line: bytes, where: str) -> None:
    obj = _unframe(line, where)
    if set(obj) != _HEADER_KEYS or obj["format"] != LOG_FORMAT_NAME:
        raise CorruptObjectError(f"{where}: first line is not a tensorcas log header")
    if type(obj["version"]) is not int or obj["version"] != FORMAT_VERSION:
        raise FormatError(f"{where}: log format version {obj['version']!r} is not supported; upgrade tensorcas")


def decode_entry(
    line: bytes, where: str
) -> LogEntry | PackedBlob | SealedPack | RootEntry | UnrootEntry:
    """Parse and fully validate one log line (without its newline)."""
    entry = scan_entry(line, where)
    if not isinstance(entry, tuple):
        return entry
    name, time_ns, fields = entry
    return LogEntry(name, time_ns, None if fields is None else record_from_fields(name, fields, where))


# The start of a put line as the reference writer writes it, with an ASCII name that needs no
# escaping: the common case, read without a JSON parse when a store is opened.
_FAST_PUT_RE = re.compile(rb'[0-9a-f]{16} \{"op":"put","t":(0|[1-9][0-9]{0,18}),"name":"([\x20\x21\x23-\x5b\x5d-\x7e]+)",')
BLOB_LINE_START = b'{"op":"blob",'
# Whole lines in the reference writer's exact form.  A full match validates the syntax of every
# field (and leaves no room for duplicate keys), so no JSON parse is needed; ranges and bounds are
# still checked after.  Anything else takes the general path.
_INT = rb"(0|[1-9][0-9]{0,18})"
_INTS = rb"\[((?:0|[1-9][0-9]{0,18})(?:,(?:0|[1-9][0-9]{0,18}))*)?\]"
_FULL_PUT_RE = re.compile(
    rb'[0-9a-f]{16} \{"op":"put","t":[0-9]+,"name":"[\x20\x21\x23-\x5b\x5d-\x7e]+","dtype":"([a-z0-9_]{1,32})",'
    rb'"shape":' + _INTS + rb',"stride":' + _INTS + rb',"offset":' + _INT + rb',"requires_grad":(true|false),'
    rb'"blob":"(blake3:[0-9a-f]{64})","nbytes":' + _INT + rb"\}"
)
_FULL_BLOB_RE = re.compile(
    rb'[0-9a-f]{16} \{"op":"blob","blob":"(blake3:[0-9a-f]{64})","nbytes":' + _INT
    + rb',"pack":"([0-9a-z][0-9a-z._-]{0,127})","offset":' + _INT + rb"\}"
)


def decode_blob_line(line: bytes, where: str) -> PackedBlob:
    """A blob entry, fully validated (the reference writer's exact form is read without JSON)."""
    full = _FULL_BLOB_RE.fullmatch(line)
    if full is None:
        entry = scan_entry(line, where)
        if not isinstance(entry, PackedBlob):
            raise CorruptObjectError(f"{where}: not a blob entry")
        return entry
    _check_checksum(line, where)
    nbytes, offset = int(full[2]), int(full[4])
    if nbytes > MAX_INT or offset > MAX_INT:
        raise CorruptObjectError(f"{where}: nbytes or offset is not below 2**63")
    return PackedBlob(blob=full[1].decode("ascii"), nbytes=nbytes, pack=full[3].decode("ascii"), offset=offset)


def _ints(group: bytes | None) -> tuple[int, ...]:
    return tuple(int(v) for v in group.split(b",")) if group else ()


def scan_entry(
    line: bytes, where: str
) -> (
    PackedBlob
    | SealedPack
    | RootEntry
    | UnrootEntry
    | tuple[str, int, dict[str, Any] | bytes | None]
):
    """Parse one log line and validate what ordering needs: a blob or seal entry whole, a put or
    delete entry's name and time.  A put's other fields are returned unchecked (a dict, or the
    line itself when only its start was read) for :func:`record_from_fields` to check when the
    record is used: opening a store and listing a million names should not validate a million
    records.  The line's checksum is always checked."""
    fast = _FAST_PUT_RE.match(line)
    if fast is not None:
        _check_checksum(line, where)
        t = int(fast[1])
        if t > MAX_INT:
            raise CorruptObjectError(f"{where}: time {t} is not below 2**63")
        name = fast[2].decode("ascii")  # printable ASCII without quote or backslash
        if len(name) > MAX_NAME_BYTES or _BAD_COMPONENT_RE.search(name):
            raise CorruptObjectError(f"{where}: tensor name {name[:80]!r} is not a valid name")
        return name, t, line
    obj = _unframe(line, where)
    op = obj.get("op")
    if op == "blob":
        if obj.keys() != _BLOB_KEYS:
            raise CorruptObjectError(f"{where}: not a blob entry (keys {sorted(obj)[:12]})")
        blob, pack = obj["blob"], obj["pack"]
        if not isinstance(blob, str) or not _DIGEST_RE.match(blob):
            raise CorruptObjectError(f"{where}: blob {blob!r} is not a blake3 digest")
        if not isinstance(pack, str) or not _WRITER_ID_RE.match(pack):
            raise CorruptObjectError(f"{where}: pack id {pack!r} is invalid")
        for field in ("nbytes", "offset"):
            if type(obj[field]) is not int or not 0 <= obj[field] <= MAX_INT:
                raise CorruptObjectError(f"{where}: {field} is {obj[field]!r}; expected an integer in [0, 2**63)")
        return PackedBlob(blob=blob, nbytes=obj["nbytes"], pack=pack, offset=obj["offset"])
    if op == "seal":
        if obj.keys() != _SEAL_KEYS or not isinstance(obj["pack"], str) or not _WRITER_ID_RE.match(obj["pack"]):
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
    if not isinstance(blob, str) or not _DIGEST_RE.match(blob):
        raise CorruptObjectError(f"{where}: blob {blob!r} is not a blake3 digest")
    if op == "unroot":
        return UnrootEntry(blob, t)
    nbytes, aliases = obj["nbytes"], obj["aliases"]
    if type(nbytes) is not int or not 0 <= nbytes <= MAX_INT:
        raise CorruptObjectError(
            f"{where}: nbytes is {nbytes!r}; expected an integer in [0, 2**63)"
        )
    if (
        not isinstance(aliases, list)
        or len(aliases) > MAX_ALIASES
        or not all(isinstance(a, str) and _ALIAS_RE.match(a) for a in aliases)
    ):
        raise CorruptObjectError(
            f"{where}: aliases must be a list of at most {MAX_ALIASES} '<scheme>:<hex>' strings"
        )
    return RootEntry(blob, nbytes, t, tuple(aliases))


def record_from_fields(name: str, fields: dict[str, Any] | bytes, where: str) -> TensorRecord:
    """The validated record of a put entry returned by :func:`scan_entry`."""
    if isinstance(fields, bytes):
        full = _FULL_PUT_RE.fullmatch(fields)  # the line's checksum was checked when it was read
        if full is not None:
            record = TensorRecord(
                name=name,
                dtype=full[1].decode("ascii"),
                shape=_ints(full[2]),
                stride=_ints(full[3]),
                offset=int(full[4]),
                requires_grad=full[5] == b"true",
                blob=full[6].decode("ascii"),
                nbytes=int(full[7]),
            )
            try:
                validate_record(record, check_name=False)
            except CorruptObjectError as exc:
                raise CorruptObjectError(f"{where}: {exc}") from None
            return record
        obj = _unframe(fields, where)
        if obj.get("op") != "put" or obj.keys() != _PUT_KEYS or obj["name"] != name:
            raise CorruptObjectError(f"{where}: not a put entry of tensor {name!r}")
        fields = obj
    shape, stride = fields["shape"], fields["stride"]
    if not isinstance(shape, list) or not isinstance(stride, list):
        raise CorruptObjectError(f"{where}: record of tensor {name!r}: shape and stride must be lists")
    record = TensorRecord(
        name=name,
        dtype=fields["dtype"],
        shape=tuple(shape),
        stride=tuple(stride),
        offset=fields["offset"],
        requires_grad=fields["requires_grad"],
        blob=fields["blob"],
        nbytes=fields["nbytes"],
    )
    try:
        validate_record(record, check_name=False)
    except CorruptObjectError as exc:
        raise CorruptObjectError(f"{where}: {exc}") from None
    return record


def _frame(obj: dict[str, Any]) -> bytes:
    return _frame_body(_dumps(obj))


def _frame_body(body: bytes) -> bytes:
    return blake3.blake3(body).hexdigest()[:_CHECKSUM_LEN].encode("ascii") + b" " + body + b"\n"


def _check_checksum(line: bytes, where: str) -> bytes:
    """The line's JSON body, once its length and checksum are found sound."""
    if len(line) > MAX_LINE_BYTES:
        raise CorruptObjectError(f"{where}: line of {len(line)} bytes exceeds the {MAX_LINE_BYTES}-byte limit")
    checksum, sep, body = line[:_CHECKSUM_LEN], line[_CHECKSUM_LEN : _CHECKSUM_LEN + 1], line[_CHECKSUM_LEN + 1 :]
    if sep != b" " or blake3.blake3(body).hexdigest()[:_CHECKSUM_LEN].encode("ascii") != checksum:
        raise CorruptObjectError(f"{where}: checksum mismatch; the line is damaged")
    return body


def _unframe(line: bytes, where: str) -> dict[str, Any]:
    body = _check_checksum(line, where)
    try:
        obj = _loads(body)
    except ValueError as exc:
        raise CorruptObjectError(f"{where}: invalid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise CorruptObjectError(f"{where}: expected a JSON object")
    return obj


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
_json_str = json.encoder.encode_basestring_ascii


def _dumps(obj: dict[str, Any]) -> bytes:
    return _ENCODER.encode(obj).encode("ascii")


def _reject_constant(value: str) -> Any:
    raise ValueError(f"non-standard JSON constant {value}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {duplicate!r}")
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def _loads(data: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, no duplicate keys, no huge integers."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc.reason}") from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
