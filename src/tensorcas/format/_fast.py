"""Fast paths for the log lines the reference writer writes: formatted and read without JSON.

Opening a store reads every line of every log, and writing many small tensors writes one line
each, so the common lines are encoded with an f-string and read with one regular expression each.
These are private to ``format.entries``: callers only see one encode and one decode per entry
kind, which fall back to the strict JSON path for anything the expressions do not match.  A full
match validates the syntax of every field (and leaves no room for duplicate keys); ranges and
bounds are still checked by the caller.  ``tests/test_format_paths.py`` checks, property by
property, that both paths write the same bytes and read the same entries.
"""

from __future__ import annotations

import re

from ._json import json_str
from .records import TensorRecord, parsed_record

_INT = rb"(0|[1-9][0-9]{0,18})"
_INTS = rb"\[((?:0|[1-9][0-9]{0,18})(?:,(?:0|[1-9][0-9]{0,18}))*)?\]"
#: A name that needs no escaping in JSON: printable ASCII without quote or backslash.
_PLAIN_NAME = rb'"([\x20\x21\x23-\x5b\x5d-\x7e]+)"'

#: The start of a put line with a plain name: enough to index a name without parsing the rest.
_PUT_START_RE = re.compile(rb'[0-9a-f]{16} \{"op":"put","t":' + _INT + rb',"name":' + _PLAIN_NAME + rb",")
#: The rest of a put line after ``_PUT_START_RE``'s match, in the reference writer's exact form:
#: only a line that is canonical to its end takes the fast path, so that a line whose JSON is
#: broken after the name is treated exactly as the JSON path treats it (FORMAT.md section 4.5).
_PUT_TAIL_RE = re.compile(
    rb'"dtype":"[a-z0-9_]{1,32}","shape":(?:\[(?:0|[1-9][0-9]{0,18})(?:,(?:0|[1-9][0-9]{0,18}))*\]|\[\]),'
    rb'"stride":(?:\[(?:0|[1-9][0-9]{0,18})(?:,(?:0|[1-9][0-9]{0,18}))*\]|\[\]),"offset":(?:0|[1-9][0-9]{0,18}),'
    rb'"requires_grad":(?:true|false),"blob":"blake3:[0-9a-f]{64}","nbytes":(?:0|[1-9][0-9]{0,18})\}'
)
#: A whole put line with a plain name in that form: one match, not two.
_PUT_WHOLE_RE = re.compile(_PUT_START_RE.pattern + _PUT_TAIL_RE.pattern)
_PUT_RE = re.compile(
    rb'[0-9a-f]{16} \{"op":"put","t":[0-9]+,"name":"[\x20\x21\x23-\x5b\x5d-\x7e]+","dtype":"([a-z0-9_]{1,32})",'
    rb'"shape":' + _INTS + rb',"stride":' + _INTS + rb',"offset":' + _INT + rb',"requires_grad":(true|false),'
    rb'"blob":"(blake3:[0-9a-f]{64})","nbytes":' + _INT + rb"\}"
)
_BLOB_RE = re.compile(
    rb'[0-9a-f]{16} \{"op":"blob","blob":"(blake3:[0-9a-f]{64})","nbytes":' + _INT
    + rb',"pack":"([0-9a-z][0-9a-z._-]{0,127})","offset":' + _INT + rb"\}"
)

#: How a blob line's body starts (after the 16-digit checksum and a space).
BLOB_LINE_START = b'{"op":"blob",'


def put_body(record: TensorRecord, time_ns: int) -> bytes:
    """The JSON body of a put line, byte-identical to ``dumps`` of the same fields in this order."""
    return (
        f'{{"op":"put","t":{time_ns},"name":{json_str(record.name)},"dtype":"{record.dtype}",'
        f'"shape":[{",".join(map(str, record.shape))}],"stride":[{",".join(map(str, record.stride))}],'
        f'"offset":{record.offset},"requires_grad":{"true" if record.requires_grad else "false"},'
        f'"blob":"{record.blob}","nbytes":{record.nbytes}}}'
    ).encode("ascii")


def blob_body(blob: str, nbytes: int, pack: str, offset: int) -> bytes:
    """The JSON body of a blob line, byte-identical to ``dumps`` of the same fields in this order."""
    return f'{{"op":"blob","blob":"{blob}","nbytes":{nbytes},"pack":"{pack}","offset":{offset}}}'.encode("ascii")


def seal_body(pack: str) -> bytes:
    return f'{{"op":"seal","pack":"{pack}"}}'.encode("ascii")


def put_start(line: bytes) -> tuple[int, str] | None:
    """``(time_ns, name)`` of a put line with a plain name in the writer's exact form to its
    end, unchecked beyond syntax; else ``None`` (the JSON path then decides: both paths must
    agree on every line, FORMAT.md section 4.5)."""
    match = _PUT_WHOLE_RE.fullmatch(line)
    if match is None:
        return None
    return int(match[1]), match[2].decode("ascii")


#: Shapes and strides read so far, by their bytes in the line: a store's tensors repeat a few of
#: them (every layer of a width, stride ``[1]``), and a tuple shared costs neither a parse nor
#: memory again.  Bounded: emptied when full.
_SEEN_INTS: dict[bytes, tuple[int, ...]] = {}
_MAX_INTS = 4096


def _ints(group: bytes | None) -> tuple[int, ...]:
    if not group:
        return ()
    found = _SEEN_INTS.get(group)
    if found is None:
        found = tuple(map(int, group.split(b",")))
        if len(_SEEN_INTS) >= _MAX_INTS:
            _SEEN_INTS.clear()
        _SEEN_INTS[group] = found
    return found


def put_record(name: str, line: bytes) -> TensorRecord | None:
    """The record of a whole put line in the writer's exact form (fields unchecked beyond their
    syntax), else ``None``."""
    full = _PUT_RE.fullmatch(line)
    if full is None:
        return None
    dtype, shape, stride, offset, requires_grad, blob, nbytes = full.groups()
    return parsed_record(
        name,
        dtype.decode("ascii"),
        _ints(shape),
        _ints(stride),
        int(offset),
        requires_grad == b"true",
        blob.decode("ascii"),
        int(nbytes),
    )


def blob_fields(line: bytes) -> tuple[str, int, str, int] | None:
    """``(blob, nbytes, pack, offset)`` of a blob line in the writer's exact form, else ``None``."""
    full = _BLOB_RE.fullmatch(line)
    if full is None:
        return None
    return full[1].decode("ascii"), int(full[2]), full[3].decode("ascii"), int(full[4])
