"""The fast paths for the writers' own log lines agree with the strict JSON path.

Put and blob lines are written with an f-string and read with regular expressions (the hot paths of
writing and of opening a store); every other line goes through strict JSON.  These properties pin
that the two never disagree: the same bytes out, the same entry or the same refusal in.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tensorcas import format as fmt
from tensorcas.errors import CorruptObjectError
from tensorcas.format import entries

DIGESTS = st.binary(min_size=32, max_size=32).map(lambda b: "blake3:" + b.hex())
INTS = st.integers(min_value=0, max_value=(1 << 63) - 1)
SMALL = st.integers(min_value=0, max_value=1 << 20)
COMPONENT = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=8).filter(
    lambda c: c not in (".", "..") and "/" not in c and "\\" not in c
)
PLAIN_COMPONENT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=8).filter(
    lambda c: c not in (".", "..") and "/" not in c and "\\" not in c
)
NAMES = st.lists(st.one_of(COMPONENT, PLAIN_COMPONENT), min_size=1, max_size=4).map("/".join)


@st.composite
def records(draw: st.DrawFn) -> fmt.TensorRecord:
    dtype = draw(st.sampled_from(sorted(fmt.DTYPES)))
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    stride = tuple(draw(st.lists(st.integers(0, 50), min_size=ndim, max_size=ndim)))
    offset = draw(st.integers(0, 40))
    need = fmt.required_nbytes(dtype, shape, stride, offset)
    torch_dtype = fmt.DTYPES[dtype]
    grad_ok = torch_dtype.is_floating_point or torch_dtype.is_complex
    return fmt.TensorRecord(
        name=draw(NAMES),
        dtype=dtype,
        shape=shape,
        stride=stride,
        offset=offset,
        requires_grad=grad_ok and draw(st.booleans()),
        blob=draw(DIGESTS),
        nbytes=need + draw(st.integers(0, 64)),
    )


def outcome(decode, line: bytes) -> object:
    """What a decoder makes of a line: the entry, or that it refused it as damaged."""
    try:
        return decode(line, "test")
    except CorruptObjectError:
        return "refused"


@settings(max_examples=300, deadline=None)
@given(records(), INTS)
def test_put_fast_encoding_is_the_json_encoding(record: fmt.TensorRecord, time_ns: int) -> None:
    fields = {
        "op": "put",
        "t": time_ns,
        "name": record.name,
        "dtype": record.dtype,
        "shape": list(record.shape),
        "stride": list(record.stride),
        "offset": record.offset,
        "requires_grad": record.requires_grad,
        "blob": record.blob,
        "nbytes": record.nbytes,
    }
    line = fmt.encode_put(record, time_ns)
    assert line == fmt._frame(fields)
    assert fmt.decode_entry(line[:-1], "test") == entries._decode_json(line[:-1], "test")
    assert fmt.decode_entry(line[:-1], "test") == fmt.LogEntry(record.name, time_ns, record)


@settings(max_examples=200, deadline=None)
@given(DIGESTS, INTS, st.text("abcdef0123456789-", min_size=1, max_size=20).map(lambda s: "p" + s), INTS)
def test_blob_fast_encoding_is_the_json_encoding(blob: str, nbytes: int, pack: str, offset: int) -> None:
    packed = fmt.PackedBlob(blob, nbytes, pack, offset)
    line = packed.encode()
    assert line == fmt._frame({"op": "blob", "blob": blob, "nbytes": nbytes, "pack": pack, "offset": offset})
    assert fmt.PackedBlob.decode(line[:-1], "test") == packed == entries._decode_json(line[:-1], "test")


# Values that are almost right: what a hostile or buggy writer might put in a field.
ODD_VALUES = st.sampled_from(
    [
        "-1", "01", "1.0", "1e3", "true", "null", '"7"', "[]", "[1,]", "[-1]", "[01]", "{}",
        "9223372036854775807", "9223372036854775808", "99999999999999999999", "[1,2,3]", '"float32"',
        '"nonsense"', '"blake3:' + "0" * 64 + '"', '"blake3:' + "A" * 64 + '"', '"a/../b"', '"a//b"', '"x\\u0000"',
    ]
)  # fmt: skip


@st.composite
def odd_lines(draw: st.DrawFn) -> bytes:
    """A put or blob line in the writer's key order (the fast path's shape), with one or two
    fields replaced by odd values, framed with a valid checksum so that decoding reaches them."""
    kind = draw(st.sampled_from(["put", "blob"]))
    if kind == "put":
        record = draw(records())
        body = fmt.encode_put(record, draw(INTS))[17:-1]
    else:
        body = fmt.PackedBlob(draw(DIGESTS), draw(SMALL), "p1", draw(SMALL)).encode()[17:-1]
    obj = json.loads(body)
    raw = {k: json.dumps(v, separators=(",", ":")) for k, v in obj.items()}
    for key in draw(st.lists(st.sampled_from(sorted(set(raw) - {"op"})), min_size=1, max_size=2, unique=True)):
        raw[key] = draw(ODD_VALUES)
    text = "{" + ",".join(f'"{k}":{v}' for k, v in raw.items()) + "}"
    return fmt._frame_body(text.encode("utf-8"))[:-1]


@settings(max_examples=500, deadline=None)
@given(odd_lines())
def test_fast_and_json_paths_agree_on_odd_lines(line: bytes) -> None:
    assert outcome(fmt.decode_entry, line) == outcome(entries._decode_json, line)


@settings(max_examples=200, deadline=None)
@given(odd_lines())
def test_blob_decoder_agrees_with_json_path(line: bytes) -> None:
    json_path = outcome(entries._decode_json, line)
    if isinstance(json_path, fmt.PackedBlob):
        assert outcome(fmt.PackedBlob.decode, line) == json_path
    else:
        assert outcome(fmt.PackedBlob.decode, line) == "refused"


@settings(max_examples=100, deadline=None)
@given(NAMES, INTS)
def test_delete_round_trips(name: str, time_ns: int) -> None:
    line = fmt.encode_delete(name, time_ns)[:-1]
    assert fmt.decode_entry(line, "test") == fmt.LogEntry(name, time_ns, None) == entries._decode_json(line, "test")
