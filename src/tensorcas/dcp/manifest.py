"""The checkpoint manifest: what a checkpoint holds, as strict JSON, validated on every read.

A checkpoint saved through ``torch.distributed.checkpoint`` (DCP) is one *manifest*: a JSON
document stored as a blob under the name ``checkpoints/<checkpoint>`` (a 1-D ``uint8`` tensor).
It replaces DCP's pickled ``.metadata`` file and lists, for every state-dict key (its *fqn*):

* a tensor: dtype, global size, and its chunks (offsets and sizes in the global tensor), each
  pointing at the tensor name that holds the chunk's bytes (relative to
  ``checkpoints/<checkpoint>/<save id>/``) and pinning that name's blob digest;
* a non-tensor value (a step count, a learning rate, ``bytes``): the value itself, in a small
  typed JSON encoding (:mod:`.values`), so that loading never unpickles anything.

Chunks are ordinary tensor names below ``checkpoints/<checkpoint>/<save id>/``: they keep their
blobs alive for gc exactly as any other name does, and identical bytes are stored once across
ranks and checkpoints.  The manifest is written last, once every rank has finished, so a save
that was interrupted is never listed.

Everything here is pure data: no torch.distributed, no I/O.  :func:`decode_manifest` treats its
input as hostile (exact types, ranges, a dtype allow-list, bounded size and depth).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from .. import format as fmt
from ..errors import CheckpointError, CorruptObjectError, InvalidNameError
from .checks import MAX_FQN_BYTES, Invalid, checked_fqn, exact_keys, integer, integers, list_of
from .names import SAVE_ID_RE, chunks_prefix
from .paths import PathElement, unflatten
from .values import decode_value

FORMAT = "tensorcas-checkpoint"
VERSION = 1

#: The largest manifest a reader accepts (a 100,000-chunk checkpoint needs about 30 MiB).
MAX_MANIFEST_BYTES = 256 << 20


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


#: The deepest nesting of JSON arrays and objects a manifest may have (values nest at most
#: ``MAX_VALUE_DEPTH`` levels inside a few levels of the document itself).
MAX_NESTING = 128

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def _nesting(data: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON document (brackets inside strings do
    not count), found without parsing it."""
    skeleton = _NOT_BRACKET.sub(b"", _STRING.sub(b"", data))
    depth = peak = 0
    for byte in skeleton:
        depth += 1 if byte in b"[{" else -1
        peak = max(peak, depth)
    return peak


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def decode_manifest(data: bytes, checkpoint: str) -> Manifest:
    """Parse and validate a manifest read from a store.  Raises :class:`CorruptObjectError`
    saying which field is wrong."""
    where = f"manifest of checkpoint {checkpoint!r}"
    if len(data) > MAX_MANIFEST_BYTES:
        raise CorruptObjectError(f"{where} is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES}")
    depth = _nesting(data)
    if depth > MAX_NESTING:
        # Refused before parsing: a recursive parse of a hostile document would run into the
        # interpreter's recursion limit, where even unrelated cleanup code can fail.
        raise CorruptObjectError(f"{where} nests {depth} levels deep; the limit is {MAX_NESTING}")
    try:
        doc = _DECODER.decode(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptObjectError(f"{where} is not strict JSON: {exc}") from None
    try:
        return _manifest_from_doc(doc, checkpoint)
    except Invalid as exc:
        raise CorruptObjectError(
            f"{where} is damaged: {exc}; the checkpoint cannot be loaded (remove it with "
            f"'tensorcas checkpoints rm STORE {checkpoint}')"
        ) from None


def _manifest_from_doc(doc: Any, checkpoint: str) -> Manifest:
    doc = exact_keys(
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
        raise Invalid(f"format is {doc['format']!r}, not {FORMAT!r}")
    version = integer(doc["version"], "version")
    if version != VERSION:
        raise Invalid(
            f"version {version} is not one this release reads (it reads {VERSION}); upgrade tensorcas"
        )
    if doc["checkpoint"] != checkpoint:
        raise Invalid(f"it names checkpoint {doc['checkpoint']!r}")
    save_id = doc["save_id"]
    if not isinstance(save_id, str) or not SAVE_ID_RE.match(save_id):
        raise Invalid(f"save_id {save_id!r} is not of the form <hex>-<8 hex>")
    time_ns = integer(doc["time"], "time")
    dcp_version = doc["dcp_version"]
    if dcp_version is not None and not (isinstance(dcp_version, str) and len(dcp_version) <= 64):
        raise Invalid("dcp_version must be null or a short string")
    modules = list_of(doc["modules"], "modules")
    if not all(isinstance(m, str) and len(m) <= MAX_FQN_BYTES for m in modules):
        raise Invalid("modules must be a list of strings")
    prefix = f"{chunks_prefix(checkpoint)}{save_id}/"
    entries: dict[str, Entry] = {}
    raw_entries = doc["entries"]
    if not isinstance(raw_entries, dict):
        raise Invalid("entries must be an object")
    for fqn, raw in raw_entries.items():
        checked_fqn(fqn)
        entries[fqn] = _entry(raw, fqn, prefix)
    paths = None
    if doc["paths"] is not None:
        raw_paths = doc["paths"]
        if not isinstance(raw_paths, dict):
            raise Invalid("paths must be null or an object")
        paths = {}
        for fqn, raw in raw_paths.items():
            if fqn not in entries:
                raise Invalid(f"paths names {fqn[:100]!r}, which has no entry")
            paths[fqn] = _path(raw, fqn)
        if len(paths) != len(entries):
            raise Invalid("paths must give a path for every entry")
        unflatten(
            dict.fromkeys(paths, 0), paths
        )  # no clashes, bounded lists (DCP rebuilds with these)
    return Manifest(checkpoint, save_id, time_ns, entries, paths, dcp_version, tuple(modules))


def _entry(raw: Any, fqn: str, prefix: str) -> Entry:
    what = f"entry {fqn[:100]!r}"
    if not isinstance(raw, dict) or "kind" not in raw:
        raise Invalid(f"{what} must be an object with a 'kind'")
    if raw["kind"] == "value":
        raw = exact_keys(raw, what, {"kind", "value"})
        decode_value(raw["value"], what)  # validates
        return ValueEntry(raw["value"])
    if raw["kind"] != "tensor":
        raise Invalid(f"{what}: kind {raw['kind']!r} is neither 'tensor' nor 'value'")
    raw = exact_keys(raw, what, {"kind", "dtype", "size", "requires_grad", "chunks"})
    dtype = raw["dtype"]
    if not isinstance(dtype, str) or dtype not in fmt.DTYPES:
        raise Invalid(f"{what}: dtype {dtype!r} is not one tensorcas can load")
    size = integers(raw["size"], f"{what} size")
    if math.prod(size) * fmt.itemsize(dtype) > fmt.MAX_INT:
        raise Invalid(f"{what}: size {list(size)} is too large")
    if not isinstance(raw["requires_grad"], bool):
        raise Invalid(f"{what}: requires_grad must be true or false")
    chunks = []
    for i, rc in enumerate(list_of(raw["chunks"], f"{what} chunks")):
        cw = f"{what} chunk {i}"
        rc = exact_keys(rc, cw, {"offsets", "sizes", "name", "blob", "nbytes"})
        offsets = integers(rc["offsets"], f"{cw} offsets")
        sizes = integers(rc["sizes"], f"{cw} sizes")
        if len(offsets) != len(size) or len(sizes) != len(size):
            raise Invalid(
                f"{cw}: offsets and sizes must have {len(size)} entries, as the tensor's size"
            )
        if any(o + s > n for o, s, n in zip(offsets, sizes, size)):
            raise Invalid(f"{cw}: reaches outside the tensor of size {list(size)}")
        if not isinstance(rc["name"], str):
            raise Invalid(f"{cw}: name must be a string")
        name = prefix + rc["name"]  # chunk names are kept relative to the save's prefix
        try:
            fmt.validate_name(name)
        except InvalidNameError as exc:
            raise Invalid(f"{cw}: {exc}") from None
        try:
            hex_digest = fmt.parse_digest(rc["blob"])
        except ValueError as exc:
            raise Invalid(f"{cw}: {exc}") from None
        if rc["blob"] != fmt.format_digest(hex_digest):
            raise Invalid(f"{cw}: blob must be written as 'blake3:<64 hex>'")
        nbytes = integer(rc["nbytes"], f"{cw} nbytes")
        if math.prod(sizes) * fmt.itemsize(dtype) > nbytes:
            raise Invalid(f"{cw}: {nbytes} bytes cannot hold {list(sizes)} elements of {dtype}")
        chunks.append(Chunk(offsets, sizes, name, rc["blob"], nbytes))
    return TensorEntry(dtype, size, raw["requires_grad"], tuple(chunks))


def _path(raw: Any, fqn: str) -> tuple[PathElement, ...]:
    items = list_of(raw, f"path of {fqn[:100]!r}")
    if not items or len(items) > fmt.MAX_NDIM or not isinstance(items[0], str):
        raise Invalid(
            f"path of {fqn[:100]!r} must be 1 to {fmt.MAX_NDIM} keys, starting with a string"
        )
    for item in items:
        if isinstance(item, str):
            checked_fqn(item)
        elif type(item) is not int or not 0 <= item <= fmt.MAX_INT:
            raise Invalid(f"path of {fqn[:100]!r}: {item!r} is neither a key nor a list index")
    return tuple(items)
