"""The on-disk schema: dtypes, names, key layout, the store marker, records and log entries.

Everything here treats its input as hostile: each field is checked for its exact type, its range
and its form before any other layer sees it.  This package knows nothing of torch beyond the dtype
table, and nothing of where bytes live.  ``docs/FORMAT.md`` is the specification it implements.

Modules, each importable on its own (``from tensorcas.format.layout import blob_key``); the names
below are re-exported so that ``from tensorcas import format as fmt`` gives the whole schema:

* ``dtypes``  -- the stable name of each storable dtype;
* ``names``   -- valid tensor names and prefixes;
* ``layout``  -- digests, and the one seam between a digest or id and a key;
* ``marker``  -- ``tensorcas.json``;
* ``records`` -- :class:`TensorRecord` and its validation;
* ``entries`` -- log lines: :class:`Header`, :class:`LogEntry`, :class:`PackedBlob`,
  :class:`SealedPack`, :class:`RootEntry`, :class:`UnrootEntry`, each with one ``encode`` and one
  ``decode``.
"""

from __future__ import annotations

from typing import Any

from . import dtypes as _dtypes
from .dtypes import dtype_name, is_floating_or_complex, itemsize, torch_dtype
from .entries import (
    BLOB_LINE_START,
    LOG_FORMAT_NAME,
    MAX_LINE_BYTES,
    Entry,
    Fields,
    Header,
    LogEntry,
    PackedBlob,
    RootEntry,
    Scanned,
    SealedPack,
    UnrootEntry,
    Whole,
    _frame,
    _frame_body,
    decode_blob_fields,
    decode_blob_line,
    decode_entry,
    decode_header,
    encode_delete,
    encode_header,
    encode_packed,
    encode_put,
    encode_root,
    encode_seal,
    encode_unroot,
    record_from_fields,
    scan_entry,
)
from .layout import (
    BLOBS,
    DIGEST_ALGORITHM,
    LOGS,
    MAX_ALIASES,
    META_KEY,
    PACKS,
    TOP_LEVEL,
    blob_key,
    format_digest,
    is_alias,
    is_digest,
    is_id,
    is_log_key,
    is_pack_key,
    key_to_digest,
    log_key,
    pack_key,
    parse_digest,
    validate_alias,
)
from .marker import FORMAT_NAME, FORMAT_VERSION, MAX_META_BYTES, encode_meta, validate_meta
from .names import MAX_NAME_BYTES, name_matches, validate_name, validate_prefix
from .records import MAX_INT, MAX_NDIM, TensorRecord, make_record, required_nbytes, validate_record

__all__ = [
    "BLOBS",
    "BLOB_LINE_START",
    "DIGEST_ALGORITHM",
    "DTYPES",
    "DTYPE_NAMES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LOGS",
    "LOG_FORMAT_NAME",
    "MAX_ALIASES",
    "MAX_INT",
    "MAX_LINE_BYTES",
    "MAX_META_BYTES",
    "MAX_NAME_BYTES",
    "MAX_NDIM",
    "META_KEY",
    "PACKS",
    "TOP_LEVEL",
    "Entry",
    "Fields",
    "Header",
    "LogEntry",
    "PackedBlob",
    "RootEntry",
    "Scanned",
    "SealedPack",
    "TensorRecord",
    "UnrootEntry",
    "Whole",
    "_frame",
    "_frame_body",
    "blob_key",
    "decode_blob_fields",
    "decode_blob_line",
    "decode_entry",
    "decode_header",
    "dtype_name",
    "encode_delete",
    "encode_header",
    "encode_meta",
    "encode_packed",
    "encode_put",
    "encode_root",
    "encode_seal",
    "encode_unroot",
    "format_digest",
    "is_alias",
    "is_digest",
    "is_floating_or_complex",
    "is_id",
    "is_log_key",
    "is_pack_key",
    "itemsize",
    "key_to_digest",
    "log_key",
    "make_record",
    "name_matches",
    "pack_key",
    "parse_digest",
    "record_from_fields",
    "required_nbytes",
    "scan_entry",
    "torch_dtype",
    "validate_alias",
    "validate_meta",
    "validate_name",
    "validate_prefix",
    "validate_record",
]


def __getattr__(name: str) -> Any:
    # ``DTYPES`` and ``DTYPE_NAMES`` import torch: built on first access (see ``dtypes``).
    if name in ("DTYPES", "DTYPE_NAMES", "_DTYPE_INFO"):
        return getattr(_dtypes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
