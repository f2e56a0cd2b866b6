"""Golden bytes that pin the on-disk format (docs/FORMAT.md).

If one of these tests fails, the format changed: stores written by earlier releases may no longer
read, or stores written now may not read in them.  Change the expected bytes only together with
FORMAT.md and, if old stores are affected, the format version.
"""

from __future__ import annotations

import os

import pytest
import torch

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas import format as fmt
from tensorcas.hashing import hash_buffer

ARANGE4_BYTES = bytes.fromhex(
    "000000000000803f0000004000004040"
)  # torch.arange(4.0), little-endian
ARANGE4_HEX = "12f7aa1736c15f83d101f7e2d514716704176211198272d1bceba7218efa24ee"
ARANGE4 = "blake3:" + ARANGE4_HEX
EMPTY = "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
ABC = (
    "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"  # BLAKE3 test vector
)

WRITER = "18c0ffee-42-0123456789ab"
T0 = 1_700_000_000_000_000_000

META = b'{"format":"tensorcas","version":1,"digest":"blake3"}\n'
HEADER = (
    b'2c2e2f694712fd8d {"format":"tensorcas-log","version":1,"writer":"18c0ffee-42-0123456789ab"}\n'
)
PUT_W = (
    b'7759044483954c8d {"op":"put","t":1700000000000000000,"name":"model/w","dtype":"float32",'
    b'"shape":[2,2],"stride":[2,1],"offset":0,"requires_grad":false,'
    b'"blob":"blake3:12f7aa1736c15f83d101f7e2d514716704176211198272d1bceba7218efa24ee","nbytes":16}\n'
)
PUT_WT = (
    b'd2b8da41155893ee {"op":"put","t":1700000000000000001,"name":"model/w.T","dtype":"float32",'
    b'"shape":[2,2],"stride":[1,2],"offset":0,"requires_grad":true,'
    b'"blob":"blake3:12f7aa1736c15f83d101f7e2d514716704176211198272d1bceba7218efa24ee","nbytes":16}\n'
)
DEL_W = b'c20e2ed68817bab0 {"op":"del","t":1700000000000000002,"name":"model/w"}\n'
BLOB_PACKED = (
    b'ed0b51c69d4b278d {"op":"blob",'
    b'"blob":"blake3:12f7aa1736c15f83d101f7e2d514716704176211198272d1bceba7218efa24ee",'
    b'"nbytes":16,"pack":"18c0ffee-42-0123456789ab-1","offset":0}\n'
)
PUT_UNICODE = (
    b'21a278726eb09751 {"op":"put","t":5,"name":"\\u6a21\\u578b/\\u00e9\\"q \\ud83d\\ude42",'
    b'"dtype":"float32","shape":[4],"stride":[1],"offset":0,"requires_grad":false,'
    b'"blob":"blake3:12f7aa1736c15f83d101f7e2d514716704176211198272d1bceba7218efa24ee","nbytes":16}\n'
)


def record(
    name: str, shape, stride, requires_grad: bool = False, offset: int = 0
) -> fmt.TensorRecord:
    return fmt.TensorRecord(
        name=name,
        dtype="float32",
        shape=tuple(shape),
        stride=tuple(stride),
        offset=offset,
        requires_grad=requires_grad,
        blob=ARANGE4,
        nbytes=16,
    )


# -- digests and keys -----------------------------------------------------------------------------


def test_digests_of_known_bytes():
    assert hash_buffer(b"") == EMPTY
    assert hash_buffer(b"abc") == ABC
    assert torch.arange(4, dtype=torch.float32).numpy().tobytes() == ARANGE4_BYTES
    assert hash_buffer(ARANGE4_BYTES) == ARANGE4
    assert tensorcas.hash_storage(torch.arange(4, dtype=torch.float32).untyped_storage()) == ARANGE4
    assert tensorcas.hash_storage(torch.empty(0).untyped_storage()) == EMPTY
    # a view's digest is its whole storage's: the record, not the digest, says which part
    assert tensorcas.hash_storage(torch.arange(4.0)[1:].untyped_storage()) == ARANGE4


def test_digest_is_the_same_for_large_multithreaded_hashes():
    data = bytes(range(256)) * (1 << 14)  # 4 MiB: above the threshold for parallel hashing
    import blake3

    expected = "blake3:" + blake3.blake3(data).hexdigest()
    assert hash_buffer(data) == expected
    assert (
        tensorcas.hash_storage(
            torch.frombuffer(bytearray(data), dtype=torch.uint8).untyped_storage()
        )
        == expected
    )


def test_blob_key_layout():
    assert (
        fmt.blob_key(ARANGE4)
        == "blobs/12/f7aa1736c15f83d101f7e2d514716704176211198272d1bceba7218efa24ee"
    )
    assert fmt.blob_key(ARANGE4_HEX) == fmt.blob_key(ARANGE4)
    assert fmt.key_to_digest(fmt.blob_key(ARANGE4)) == ARANGE4
    assert fmt.parse_digest(ARANGE4) == ARANGE4_HEX
    assert fmt.format_digest(ARANGE4_HEX) == ARANGE4


@pytest.mark.parametrize(
    "key",
    [
        "blobs/12/F7AA1736C15F83D101F7E2D514716704176211198272D1BCEBA7218EFA24EE",
        "blobs/12f/7aa1736c15f83d101f7e2d514716704176211198272d1bceba7218efa24ee",
        "blobs/12/f7aa1736c15f83d101f7e2d514716704176211198272d1bceba7218efa24e",
        "blobs/12/.tmp-0123",
        "blobs/12/f7aa1736c15f83d101f7e2d514716704176211198272d1bceba7218efa24ee/x",
        "logs/12/f7aa1736c15f83d101f7e2d514716704176211198272d1bceba7218efa24ee",
        "blobs/12f7aa1736c15f83d101f7e2d514716704176211198272d1bceba7218efa24ee",
    ],
)
def test_keys_that_are_not_blobs(key):
    assert fmt.key_to_digest(key) is None


@pytest.mark.parametrize(
    "digest",
    ["", "blake3:", "sha256:" + ARANGE4_HEX, ARANGE4.upper(), ARANGE4 + "0", " " + ARANGE4],
)
def test_malformed_digests(digest):
    with pytest.raises(tensorcas.InvalidDigestError):
        fmt.parse_digest(digest)


def test_log_and_pack_keys():
    assert fmt.log_key(WRITER) == "logs/18c0ffee-42-0123456789ab.log"
    assert fmt.is_log_key("logs/18c0ffee-42-0123456789ab.log")
    assert fmt.pack_key(WRITER + "-1") == "packs/18c0ffee-42-0123456789ab-1.pack"
    assert fmt.is_pack_key("packs/18c0ffee-42-0123456789ab-1.pack")
    for bad in (
        "logs/.tmp-x.log",
        "logs/UPPER.log",
        "logs/a/b.log",
        "logs/x.txt",
        "logs/-x.log",
        "x.log",
    ):
        assert not fmt.is_log_key(bad)
    for bad in ("../x", "A", "", "a/b", "x" * 129):
        with pytest.raises(tensorcas.FormatError):
            fmt.log_key(bad)


# -- exact bytes of the marker and of log lines ---------------------------------------------------


def test_marker_bytes():
    assert fmt.encode_meta() == META
    fmt.validate_meta(META, "here")


def test_log_line_bytes():
    assert fmt.encode_header(WRITER) == HEADER
    assert fmt.encode_put(record("model/w", (2, 2), (2, 1)), T0) == PUT_W
    assert fmt.encode_put(record("model/w.T", (2, 2), (1, 2), requires_grad=True), T0 + 1) == PUT_WT
    assert fmt.encode_delete("model/w", T0 + 2) == DEL_W
    assert fmt.encode_packed(fmt.PackedBlob(ARANGE4, 16, WRITER + "-1", 0)) == BLOB_PACKED
    assert fmt.encode_put(record('模型/é"q 🙂', (4,), (1,)), 5) == PUT_UNICODE


def test_checksum_is_blake3_of_the_json_body():
    import blake3

    for line in (HEADER, PUT_W, PUT_WT, DEL_W, BLOB_PACKED, PUT_UNICODE):
        checksum, body = line[:16], line[17:-1]
        assert line[16:17] == b" " and line.endswith(b"\n") and b"\n" not in body
        assert checksum == blake3.blake3(body).hexdigest()[:16].encode()


def test_decoding_golden_lines():
    fmt.decode_header(HEADER[:-1], "golden")
    put = fmt.decode_entry(PUT_W[:-1], "golden")
    assert put == fmt.LogEntry("model/w", T0, record("model/w", (2, 2), (2, 1)))
    deleted = fmt.decode_entry(DEL_W[:-1], "golden")
    assert deleted == fmt.LogEntry("model/w", T0 + 2, None)
    assert fmt.decode_entry(BLOB_PACKED[:-1], "golden") == fmt.PackedBlob(
        ARANGE4, 16, WRITER + "-1", 0
    )
    assert fmt.decode_entry(PUT_UNICODE[:-1], "golden").name == '模型/é"q 🙂'


@pytest.mark.parametrize(
    "line",
    [
        PUT_W[:-1].replace(b"7759044483954c8d", b"7759044483954c8e"),  # wrong checksum
        PUT_W[:-1].replace(b'"nbytes":16', b'"nbytes":17'),  # body changed, checksum not
        b"7759044483954c8d" + PUT_W[16:-1].replace(b" ", b"\t", 1),  # separator
    ],
    ids=["checksum", "body", "separator"],
)
def test_damaged_golden_lines_refused(line):
    with pytest.raises(tensorcas.CorruptObjectError):
        fmt.decode_entry(line, "golden")


# -- a store written by hand from golden bytes ----------------------------------------------------


def write_file(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_hand_written_store_reads_back(tmp_path):
    """The format, not the library, decides what this directory means."""
    root = str(tmp_path / "store")
    write_file(os.path.join(root, "tensorcas.json"), META)
    write_file(os.path.join(root, "blobs", "12", ARANGE4_HEX[2:]), ARANGE4_BYTES)
    other = "0123456789abcdef-1-000000000000"
    put_packed = fmt.encode_put(
        fmt.TensorRecord(
            "packed/b", "uint8", (3,), (2,), 1, False, hash_buffer(bytes(range(6))), 6
        ),
        T0 + 10,
    )
    write_file(os.path.join(root, "logs", WRITER + ".log"), HEADER + PUT_W + PUT_WT + DEL_W)
    write_file(
        os.path.join(root, "logs", other + ".log"),
        fmt.encode_header(other)
        + fmt.encode_packed(fmt.PackedBlob(hash_buffer(bytes(range(6))), 6, other + "-1", 4))
        + put_packed,
    )
    write_file(os.path.join(root, "packs", other + "-1.pack"), b"junk" + bytes(range(6)))

    reader = ContentStoreReader(root)
    assert reader.list_tensors() == ["model/w.T", "packed/b"]
    wt = reader.read_tensor("model/w.T")
    assert wt.requires_grad and wt.stride() == (1, 2)
    assert torch.equal(wt.detach(), torch.arange(4.0).view(2, 2).t())
    with pytest.raises(tensorcas.TensorNotFoundError, match="deleted"):
        reader.read_tensor("model/w")
    assert torch.equal(reader.read_tensor("packed/b"), torch.tensor([1, 3, 5], dtype=torch.uint8))
    assert bytes(reader.read_storage(ARANGE4)) == ARANGE4_BYTES
    report = tensorcas.verify(root)
    assert report.ok, report.findings

    # The library appends to the hand-written store without disturbing it.
    with ContentStoreWriter(root) as writer:
        writer.write_tensor("model/w", torch.arange(4.0).view(2, 2))
    reader = ContentStoreReader(root)
    assert reader.list_tensors() == ["model/w.T", "packed/b", "model/w"]
    assert torch.equal(reader.read_tensor("model/w"), torch.arange(4.0).view(2, 2))


def test_seal_line_golden_bytes():
    line = fmt.encode_seal(WRITER + "-1")
    assert line == fmt._frame({"op": "seal", "pack": WRITER + "-1"})
    assert fmt.decode_entry(line[:-1], "golden") == fmt.SealedPack(WRITER + "-1")


def test_what_the_writer_puts_on_disk(tmp_path):
    """A store the library writes holds exactly the golden pieces, up to time and writer id."""
    root = str(tmp_path / "store")
    big = torch.zeros(1 << 15, dtype=torch.float32)  # 128 KiB: a blob file of its own
    with ContentStoreWriter(root) as writer:
        writer.write_tensor("model/w", torch.arange(4.0).view(2, 2))
        writer.write_tensor("big", big)
    with open(os.path.join(root, "tensorcas.json"), "rb") as f:
        assert f.read() == META
    (log_name,) = os.listdir(os.path.join(root, "logs"))
    writer_id = log_name[: -len(".log")]
    assert fmt.is_log_key("logs/" + log_name)
    with open(os.path.join(root, "logs", log_name), "rb") as f:
        lines = f.read().splitlines(keepends=True)
    assert lines[0] == fmt.encode_header(writer_id)
    entries = [fmt.decode_entry(line[:-1], "test") for line in lines[1:]]
    puts = [e for e in entries if isinstance(e, fmt.LogEntry)]
    assert [p.name for p in puts] == ["model/w", "big"]
    assert puts[0].record == record("model/w", (2, 2), (2, 1))
    assert puts[0].time_ns < puts[1].time_ns
    for line, entry in zip(lines[1:], entries, strict=True):  # re-encoding gives the same bytes
        if isinstance(entry, fmt.LogEntry):
            assert fmt.encode_put(entry.record, entry.time_ns) == line
        elif isinstance(entry, fmt.SealedPack):
            assert fmt.encode_seal(entry.pack) == line
        else:
            assert fmt.encode_packed(entry) == line
    # closing the writer sealed its pack, after the last blob placed in it
    assert isinstance(entries[-1], fmt.SealedPack)
    assert entries[-1].pack == next(e.pack for e in entries if isinstance(e, fmt.PackedBlob))
    big_digest = tensorcas.hash_storage(big.untyped_storage())
    with open(os.path.join(root, fmt.blob_key(big_digest)), "rb") as f:
        assert f.read() == bytes(big.untyped_storage())
    # the small blob is loose or packed; either way its bytes are the golden ones
    assert bytes(ContentStoreReader(root).read_storage(ARANGE4)) == ARANGE4_BYTES
    leftovers = [
        n for _, _, files in os.walk(root) for n in files if n.startswith((".tmp-", ".gc-"))
    ]
    assert leftovers == []


def test_format_document_examples_are_valid():
    """Every log line quoted in docs/FORMAT.md has a valid checksum and decodes."""
    import re

    path = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "FORMAT.md")
    if not os.path.exists(path):
        pytest.skip("docs/FORMAT.md is not part of this checkout")
    with open(path, encoding="utf-8") as f:
        lines = [
            line.rstrip("\n").encode("ascii") for line in f if re.match(r"[0-9a-f]{16} \{", line)
        ]
    assert len(lines) >= 8
    for line in lines:
        if b'"format":"tensorcas-log"' in line:
            fmt.decode_header(line, "FORMAT.md")
        else:
            fmt.decode_entry(line, "FORMAT.md")
    assert (
        HEADER[:-1] in lines
        and PUT_W[:-1] in lines
        and DEL_W[:-1] in lines
        and PUT_UNICODE[:-1] in lines
    )
    assert len(META) == 53
