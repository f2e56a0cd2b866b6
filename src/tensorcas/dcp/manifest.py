"""The checkpoint manifest: what a checkpoint holds, as strict JSON, validated on every read.

A checkpoint saved through ``torch.distributed.checkpoint`` (DCP) is one *manifest*: a JSON
document stored as a blob under the name ``checkpoints/<checkpoint>`` (a 1-D ``uint8`` tensor).
It replaces DCP's pickled ``.metadata`` file and lists, for every state-dict key (its *fqn*):

* a tensor: dtype, global size, and its chunks (offsets and sizes in the global tensor), each
  pointing at the tensor name that holds the chunk's bytes (relative to
  ``checkpoints/<checkpoint>/<save id>/``) and pinning that name's blob digest;
* a non-tensor value (a step count, a learning rate, ``bytes``): the value itself, in a small
  typed JSON encoding (:func:`encode_value`), so that loading never unpickles anything.

Chunks are ordinary tensor names below ``checkpoints/<checkpoint>/<save id>/``: they keep their
blobs alive for gc exactly as any other name does, and identical bytes are stored once across
ranks and checkpoints.  The manifest is written last, once every rank has finished, so a save
that was interrupted is never listed.

Everything here is pure data: no torch.distributed, no I/O.  :func:`decode_manifest` treats its
input as hostile (exact types, ranges, a dtype allow-list, bounded size and depth).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import torch

from .. import format as fmt
from ..errors import CheckpointError, CorruptObjectError, InvalidNameError

FORMAT = "tensorcas-checkpoint"
VERSION = 1

#: Names of manifests are ``checkpoints/<checkpoint>``; their chunks live below that name.
PREFIX = "checkpoints"

#: The largest manifest a reader accepts (a 100,000-chunk checkpoint needs about 30 MiB).
MAX_MANIFEST_BYTES = 256 << 20

#: The deepest nesting of a non-tensor value (lists in dicts in tuples ...).
MAX_VALUE_DEPTH = 64

#: A state-dict key (fqn) longer than this is refused (DCP's keys are dotted module paths).
MAX_FQN_BYTES = 4096

_CHECKPOINT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_SAVE_ID_RE = re.compile(r"[0-9a-f]{1,32}-[0-9a-f]{8}\Z")

#: One element of a path into a nested state dict: a dict key or a list index.
PathElement = str | int


# -- names ---------------------------------------------------------------------------------------


def validate_checkpoint_name(name: object) -> str:
    """Return ``name`` if it can name a checkpoint: 1-128 characters of ``[A-Za-z0-9._-]``,
    starting with a letter or digit (``step-100``, ``epoch3.step500``)."""
    if not isinstance(name, str) or not _CHECKPOINT_NAME_RE.match(name):
        raise InvalidNameError(
            f"{name!r} is not a checkpoint name; use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, such as 'step-100'"
        )
    return name


def is_checkpoint_name(name: str) -> bool:
    return _CHECKPOINT_NAME_RE.match(name) is not None


def manifest_name(checkpoint: str) -> str:
    """The tensor name whose blob is the manifest of ``checkpoint``."""
    return f"{PREFIX}/{validate_checkpoint_name(checkpoint)}"


def chunks_prefix(checkpoint: str) -> str:
    """The prefix of every chunk name any save of ``checkpoint`` wrote (finished or not)."""
    return f"{manifest_name(checkpoint)}/"


def new_save_id() -> str:
    """A fresh id for one save: its time in hex (so ids sort by time) and 8 random hex digits."""
    return f"{time.time_ns():x}-{uuid.uuid4().hex[:8]}"


def chunk_name(checkpoint: str, save_id: str, fqn: str, offsets: tuple[int, ...]) -> str:
    """The tensor name of one chunk: readable (``.../model.layers.0.weight@64,0``) and unique
    per (fqn, offsets).  Characters a name may not hold, and ``%``, ``/`` and ``@``, are
    percent-encoded; a very long fqn is replaced by a hash of it."""
    quoted = "".join(_quote_char(c) for c in fqn)
    if len(quoted.encode()) > 1024:
        import hashlib

        quoted = (
            "~" + hashlib.blake2b(fqn.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        )
    return f"{chunks_prefix(checkpoint)}{save_id}/{quoted}@{','.join(map(str, offsets))}"


def _quote_char(c: str) -> str:
    if c in "%/@\\" or ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF:
        return "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
    return c


# -- the manifest ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One piece of a tensor as one rank saved it: ``sizes`` elements starting at ``offsets`` of
    the global tensor, stored as the tensor ``name`` whose blob is ``blob`` (``nbytes`` long)."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    name: str
    blob: str
    nbytes: int


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    size: tuple[int, ...]
    requires_grad: bool
    chunks: tuple[Chunk, ...]

    @property
    def torch_dtype(self) -> torch.dtype:
        return fmt.DTYPES[self.dtype]

    @property
    def nbytes(self) -> int:
        """Bytes of the whole (global) tensor."""
        return math.prod(self.size) * fmt.itemsize(self.dtype)


@dataclass(frozen=True)
class ValueEntry:
    """A non-tensor value, kept in its JSON encoding (:func:`encode_value`); already validated."""

    encoded: Any

    def value(self) -> Any:
        return decode_value(self.encoded, "value")


Entry = TensorEntry | ValueEntry


@dataclass(frozen=True)
class Manifest:
    """A validated checkpoint manifest."""

    checkpoint: str
    save_id: str
    time_ns: int
    entries: dict[str, Entry]
    #: Where each fqn sits in the nested state dict (DCP's flattening), or ``None`` if the state
    #: dict was saved flat.
    paths: dict[str, tuple[PathElement, ...]] | None = None
    dcp_version: str | None = None
    modules: tuple[str, ...] = ()

    def chunks(self) -> list[Chunk]:
        return [c for e in self.entries.values() if isinstance(e, TensorEntry) for c in e.chunks]

    def blobs(self) -> dict[str, int]:
        """Every blob the checkpoint's chunks use, with its size."""
        return {c.blob: c.nbytes for c in self.chunks()}

    @property
    def logical_bytes(self) -> int:
        """Bytes of all its tensors, as if each were saved whole and on its own."""
        return sum(e.nbytes for e in self.entries.values() if isinstance(e, TensorEntry))

    def encode(self) -> bytes:
        prefix = f"{chunks_prefix(self.checkpoint)}{self.save_id}/"
        if not all(c.name.startswith(prefix) for c in self.chunks()):
            raise CheckpointError(
                f"checkpoint {self.checkpoint!r}: every chunk name must be below {prefix!r}"
            )
        entries: dict[str, Any] = {}
        for fqn, entry in self.entries.items():
            if isinstance(entry, TensorEntry):
                entries[fqn] = {
                    "kind": "tensor",
                    "dtype": entry.dtype,
                    "size": list(entry.size),
                    "requires_grad": entry.requires_grad,
                    "chunks": [
                        {
                            "offsets": list(c.offsets),
                            "sizes": list(c.sizes),
                            "name": c.name[len(prefix) :],
                            "blob": c.blob,
                            "nbytes": c.nbytes,
                        }
                        for c in entry.chunks
                    ],
                }
            else:
                entries[fqn] = {"kind": "value", "value": entry.encoded}
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "checkpoint": self.checkpoint,
            "save_id": self.save_id,
            "time": self.time_ns,
            "dcp_version": self.dcp_version,
            "modules": list(self.modules),
            "entries": entries,
            "paths": None if self.paths is None else {k: list(v) for k, v in self.paths.items()},
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
            "ascii"
        )


# -- decoding (hostile input) ----------------------------------------------------------------------


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not allowed (strict JSON)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


class _Bad(Exception):
    """A field failed validation (turned into CorruptObjectError with the manifest's name)."""


def decode_manifest(data: bytes, checkpoint: str) -> Manifest:
    """Parse and validate a manifest read from a store.  Raises :class:`CorruptObjectError`
    saying which field is wrong."""
    where = f"manifest of checkpoint {checkpoint!r}"
    if len(data) > MAX_MANIFEST_BYTES:
        raise CorruptObjectError(f"{where} is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES}")
    try:
        doc = _DECODER.decode(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptObjectError(f"{where} is not strict JSON: {exc}") from None
    try:
        return _manifest_from_doc(doc, checkpoint)
    except _Bad as exc:
        raise CorruptObjectError(
            f"{where} is damaged: {exc}; the checkpoint cannot be loaded (remove it with "
            f"'tensorcas checkpoints rm STORE {checkpoint}')"
        ) from None


def _manifest_from_doc(doc: Any, checkpoint: str) -> Manifest:
    doc = _dict(
        doc,
        "the document",
        {
            "format",
            "version",
            "checkpoint",
            "save_id",
            "time",
            "dcp_version",
            "modules",
            "entries",
            "paths",
        },
    )
    if doc["format"] != FORMAT:
        raise _Bad(f"format is {doc['format']!r}, not {FORMAT!r}")
    version = _int(doc["version"], "version")
    if version != VERSION:
        raise _Bad(
            f"version {version} is not one this release reads (it reads {VERSION}); upgrade tensorcas"
        )
    if doc["checkpoint"] != checkpoint:
        raise _Bad(f"it names checkpoint {doc['checkpoint']!r}")
    save_id = doc["save_id"]
    if not isinstance(save_id, str) or not _SAVE_ID_RE.match(save_id):
        raise _Bad(f"save_id {save_id!r} is not of the form <hex>-<8 hex>")
    time_ns = _int(doc["time"], "time")
    dcp_version = doc["dcp_version"]
    if dcp_version is not None and not (isinstance(dcp_version, str) and len(dcp_version) <= 64):
        raise _Bad("dcp_version must be null or a short string")
    modules = _list(doc["modules"], "modules")
    if not all(isinstance(m, str) and len(m) <= MAX_FQN_BYTES for m in modules):
        raise _Bad("modules must be a list of strings")
    prefix = f"{chunks_prefix(checkpoint)}{save_id}/"
    entries: dict[str, Entry] = {}
    raw_entries = doc["entries"]
    if not isinstance(raw_entries, dict):
        raise _Bad("entries must be an object")
    for fqn, raw in raw_entries.items():
        _fqn(fqn)
        entries[fqn] = _entry(raw, fqn, prefix)
    paths = None
    if doc["paths"] is not None:
        raw_paths = doc["paths"]
        if not isinstance(raw_paths, dict):
            raise _Bad("paths must be null or an object")
        paths = {}
        for fqn, raw in raw_paths.items():
            if fqn not in entries:
                raise _Bad(f"paths names {fqn[:100]!r}, which has no entry")
            paths[fqn] = _path(raw, fqn)
        if len(paths) != len(entries):
            raise _Bad("paths must give a path for every entry")
        unflatten(
            dict.fromkeys(paths, 0), paths
        )  # no clashes, bounded lists (DCP rebuilds with these)
    return Manifest(checkpoint, save_id, time_ns, entries, paths, dcp_version, tuple(modules))


def _entry(raw: Any, fqn: str, prefix: str) -> Entry:
    what = f"entry {fqn[:100]!r}"
    if not isinstance(raw, dict) or "kind" not in raw:
        raise _Bad(f"{what} must be an object with a 'kind'")
    if raw["kind"] == "value":
        raw = _dict(raw, what, {"kind", "value"})
        decode_value(raw["value"], what)  # validates
        return ValueEntry(raw["value"])
    if raw["kind"] != "tensor":
        raise _Bad(f"{what}: kind {raw['kind']!r} is neither 'tensor' nor 'value'")
    raw = _dict(raw, what, {"kind", "dtype", "size", "requires_grad", "chunks"})
    dtype = raw["dtype"]
    if not isinstance(dtype, str) or dtype not in fmt.DTYPES:
        raise _Bad(f"{what}: dtype {dtype!r} is not one tensorcas can load")
    size = _ints(raw["size"], f"{what} size")
    if math.prod(size) * fmt.itemsize(dtype) > fmt.MAX_INT:
        raise _Bad(f"{what}: size {list(size)} is too large")
    if not isinstance(raw["requires_grad"], bool):
        raise _Bad(f"{what}: requires_grad must be true or false")
    chunks = []
    for i, rc in enumerate(_list(raw["chunks"], f"{what} chunks")):
        cw = f"{what} chunk {i}"
        rc = _dict(rc, cw, {"offsets", "sizes", "name", "blob", "nbytes"})
        offsets = _ints(rc["offsets"], f"{cw} offsets")
        sizes = _ints(rc["sizes"], f"{cw} sizes")
        if len(offsets) != len(size) or len(sizes) != len(size):
            raise _Bad(
                f"{cw}: offsets and sizes must have {len(size)} entries, as the tensor's size"
            )
        if any(o + s > n for o, s, n in zip(offsets, sizes, size)):
            raise _Bad(f"{cw}: reaches outside the tensor of size {list(size)}")
        if not isinstance(rc["name"], str):
            raise _Bad(f"{cw}: name must be a string")
        name = prefix + rc["name"]  # chunk names are kept relative to the save's prefix
        try:
            fmt.validate_name(name)
        except InvalidNameError as exc:
            raise _Bad(f"{cw}: {exc}") from None
        try:
            hex_digest = fmt.parse_digest(rc["blob"])
        except ValueError as exc:
            raise _Bad(f"{cw}: {exc}") from None
        if rc["blob"] != fmt.format_digest(hex_digest):
            raise _Bad(f"{cw}: blob must be written as 'blake3:<64 hex>'")
        nbytes = _int(rc["nbytes"], f"{cw} nbytes")
        if math.prod(sizes) * fmt.itemsize(dtype) > nbytes:
            raise _Bad(f"{cw}: {nbytes} bytes cannot hold {list(sizes)} elements of {dtype}")
        chunks.append(Chunk(offsets, sizes, name, rc["blob"], nbytes))
    return TensorEntry(dtype, size, raw["requires_grad"], tuple(chunks))


def _path(raw: Any, fqn: str) -> tuple[PathElement, ...]:
    items = _list(raw, f"path of {fqn[:100]!r}")
    if not items or len(items) > fmt.MAX_NDIM or not isinstance(items[0], str):
        raise _Bad(
            f"path of {fqn[:100]!r} must be 1 to {fmt.MAX_NDIM} keys, starting with a string"
        )
    for item in items:
        if isinstance(item, str):
            _fqn(item)
        elif type(item) is not int or not 0 <= item <= fmt.MAX_INT:
            raise _Bad(f"path of {fqn[:100]!r}: {item!r} is neither a key nor a list index")
    return tuple(items)


def _fqn(fqn: object) -> str:
    if not isinstance(fqn, str):
        raise _Bad("keys must be strings")
    try:
        if len(fqn.encode("utf-8")) > MAX_FQN_BYTES:
            raise _Bad(f"key {fqn[:100]!r}... is longer than {MAX_FQN_BYTES} bytes")
    except UnicodeEncodeError:
        raise _Bad(f"key {fqn[:100]!r} is not valid Unicode") from None
    return fqn


def _dict(raw: Any, what: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict) or set(raw) != keys:
        got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise _Bad(f"{what} must be an object with exactly the keys {sorted(keys)}, not {got}")
    return raw


def _list(raw: Any, what: str) -> list[Any]:
    if not isinstance(raw, list):
        raise _Bad(f"{what} must be a list")
    return raw


def _int(raw: Any, what: str) -> int:
    if type(raw) is not int or not 0 <= raw <= fmt.MAX_INT:
        raise _Bad(f"{what} must be an integer in [0, 2**63 - 1], not {raw!r}"[:300])
    return raw


def _ints(raw: Any, what: str) -> tuple[int, ...]:
    items = _list(raw, what)
    if len(items) > fmt.MAX_NDIM:
        raise _Bad(f"{what} has more than {fmt.MAX_NDIM} entries")
    return tuple(_int(x, what) for x in items)


def unflatten(flat: dict[str, Any], paths: dict[str, tuple[PathElement, ...]]) -> dict[str, Any]:
    """Put each value back where DCP found it: ``("optim", "param_groups", 0, "lr")`` is
    ``out["optim"]["param_groups"][0]["lr"]``.  Lists are padded with ``None`` as DCP does; the
    padding is bounded, so a hostile path cannot make a list of a billion entries.  Raises
    :class:`_Bad` if two paths clash (one inside the other)."""
    builder = _Builder(2 * len(flat) + 1024)
    for fqn, value in flat.items():
        builder.put(paths[fqn], value, fqn)
    return builder.root


class _Builder:
    def __init__(self, padding: int) -> None:
        self.root: dict[str, Any] = {}
        self.padding = padding  # how many list slots may still be made up

    def put(self, path: tuple[PathElement, ...], value: Any, fqn: str) -> None:
        node: Any = self.root
        for key, next_key in itertools.pairwise(path):
            empty: Any = [] if isinstance(next_key, int) else {}
            self._slot(node, key, fqn)
            child = node.setdefault(key, empty) if isinstance(node, dict) else node[key]
            if child is None:
                child = node[key] = empty
            if type(child) is not type(empty):
                raise _bad_path(fqn)
            node = child
        key = path[-1]
        self._slot(node, key, fqn)
        if (node.get(key) if isinstance(node, dict) else node[key]) is not None:
            raise _bad_path(fqn)
        node[key] = value

    def _slot(self, node: Any, key: PathElement, fqn: str) -> None:
        """Check that ``key`` fits ``node`` (a str for a dict, an index for a list), growing a
        list to hold the index."""
        if isinstance(node, dict) and isinstance(key, str):
            return
        if not (isinstance(node, list) and isinstance(key, int)):
            raise _bad_path(fqn)
        missing = key + 1 - len(node)
        if missing > 0:
            if missing > self.padding:
                raise CorruptObjectError(
                    f"the path of {fqn!r} has a list index ({key}) far beyond the entries saved"
                )
            node.extend([None] * missing)
            self.padding -= missing


def _bad_path(fqn: str) -> CorruptObjectError:
    return CorruptObjectError(
        f"the path of {fqn!r} clashes with another key's (one is inside the other)"
    )


# -- non-tensor values -----------------------------------------------------------------------------

_TAGS = frozenset(("float", "tuple", "dict", "bytes", "bytearray", "bytesio", "size", "dtype"))


def encode_value(value: Any, fqn: str, _depth: int = 0) -> Any:
    """A JSON-ready encoding of a non-tensor state-dict value.

    ``None``, ``bool``, ``int``, ``str``, finite ``float`` and lists are plain JSON; the rest
    are one-key objects: ``{"float": "nan"}``, ``{"tuple": [...]}``, ``{"dict": [[k, v], ...]}``,
    ``{"bytes": base64}`` (also ``bytearray``, ``bytesio``), ``{"size": [...]}``,
    ``{"dtype": name}``.  Anything else would need pickle, and is refused.
    """
    if _depth > MAX_VALUE_DEPTH:
        raise CheckpointError(f"value of {fqn!r} is nested deeper than {MAX_VALUE_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if type(value) is int:
        return value
    if type(value) is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if type(value) is list:
        return [encode_value(v, fqn, _depth + 1) for v in value]
    if type(value) is torch.Size:
        return {"size": list(value)}
    if type(value) is tuple:
        return {"tuple": [encode_value(v, fqn, _depth + 1) for v in value]}
    if type(value) is dict:
        return {
            "dict": [
                [encode_value(k, fqn, _depth + 1), encode_value(v, fqn, _depth + 1)]
                for k, v in value.items()
            ]
        }
    if type(value) in (bytes, bytearray):
        return {type(value).__name__: base64.b64encode(value).decode("ascii")}
    if isinstance(value, io.BytesIO):
        return {"bytesio": base64.b64encode(value.getvalue()).decode("ascii")}
    if isinstance(value, torch.dtype) and fmt.dtype_name(value) is not None:
        return {"dtype": fmt.dtype_name(value)}
    if isinstance(value, torch.Tensor):
        raise CheckpointError(
            f"value of {fqn!r} holds a tensor inside a {type(value).__name__}; DCP saves such "
            "containers whole (as pickle). Put tensors in dicts or lists so that each is saved as a tensor"
        )
    raise CheckpointError(
        f"value of {fqn!r} is a {type(value).__module__}.{type(value).__qualname__}, which cannot be "
        "kept without pickle; tensorcas keeps None, bool, int, float, str, bytes, BytesIO, "
        "torch.Size, dtypes, and lists, tuples and dicts of these"
    )


def decode_value(raw: Any, what: str, _depth: int = 0) -> Any:
    """The value :func:`encode_value` encoded; raises :class:`_Bad` for anything else."""
    if _depth > MAX_VALUE_DEPTH:
        raise _Bad(f"{what}: value nested deeper than {MAX_VALUE_DEPTH} levels")
    if raw is None or isinstance(raw, (bool, str, int)):
        return raw
    if isinstance(raw, float):
        return raw
    if isinstance(raw, list):
        return [decode_value(v, what, _depth + 1) for v in raw]
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in _TAGS:
        raise _Bad(f"{what}: a value object must have exactly one key of {sorted(_TAGS)}")
    tag, body = next(iter(raw.items()))
    if tag == "float":
        if body not in ("nan", "inf", "-inf"):
            raise _Bad(f"{what}: float {body!r} is not 'nan', 'inf' or '-inf'")
        return float(body)
    if tag == "tuple":
        return tuple(decode_value(v, what, _depth + 1) for v in _list(body, what))
    if tag == "dict":
        out = {}
        for pair in _list(body, what):
            if not isinstance(pair, list) or len(pair) != 2:
                raise _Bad(f"{what}: dict items must be [key, value] pairs")
            key = decode_value(pair[0], what, _depth + 1)
            try:
                out[key] = decode_value(pair[1], what, _depth + 1)
            except TypeError:
                raise _Bad(
                    f"{what}: dict key of type {type(key).__name__} cannot be a key"
                ) from None
        return out
    if tag in ("bytes", "bytearray", "bytesio"):
        if not isinstance(body, str):
            raise _Bad(f"{what}: {tag} must be a base64 string")
        try:
            data = base64.b64decode(body.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            raise _Bad(f"{what}: {tag} is not valid base64") from None
        return (
            data if tag == "bytes" else bytearray(data) if tag == "bytearray" else io.BytesIO(data)
        )
    if tag == "size":
        return torch.Size(_ints(body, what))
    if not isinstance(body, str) or body not in fmt.DTYPES:
        raise _Bad(f"{what}: dtype {body!r} is not one tensorcas knows")
    return fmt.DTYPES[body]
