"""Damaged and hostile stores: opening and reading them raises ``StoreError`` and nothing else.

A small store is written once; each example copies it and damages the copy: bytes of blobs, packs
and logs cut, extended or flipped; records rewritten with hostile values under a recomputed line
checksum (so that they reach the validation behind it); a bad store marker; symlinks, FIFOs and
directories where files should be, some pointing outside the store.  Then every way of reading is
exercised.  The promises checked:

* only ``tensorcas.StoreError`` subclasses escape (no ``TypeError``, ``RuntimeError``, hang...);
* with ``verify=True`` a tensor that is returned holds exactly the bytes its record's digest names;
* damage to a blob that a record uses is reported by ``verify()``;
* nothing outside the store is read or written, even where a link points there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import blake3
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensorcas
from storetools import bits, blob_files, frame, log_files
from tensorcas import ContentStoreReader, ContentStoreWriter, StoreError

SETTINGS = settings(
    max_examples=int(os.environ.get("TENSORCAS_HOSTILE_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Damaged stores exercised by this module, printed at its end.
TRIED = {"stores": 0}

SECRET_NAME = "outside/secret"


# ---------------------------------------------------------------------------------------------
# the template store and the world outside it


def _write_template(loc: str) -> dict[str, bytes]:
    """Small (packed) and large (loose) blobs, views, a deletion, an overwrite, two logs."""
    g = torch.Generator().manual_seed(7)
    a = torch.randn(10, generator=g)
    big = torch.randn(40_000, generator=g)
    tensors = {
        "small/a": a,
        "small/b": torch.arange(7),
        "small/view": a[2:8],
        "big/w": big,
        "big/t": big.view(200, 200).t(),
        "half": torch.randn(20_000, generator=g).half(),
        "flags": torch.tensor([True, False, True]),
        "grad": torch.randn(3, generator=g).requires_grad_(True),
    }
    with ContentStoreWriter(loc) as w:
        for name, t in list(tensors.items())[:4]:
            w.write_tensor(name, t)
        w.write_tensor("overwritten", torch.zeros(4))
        w.write_tensor("deleted", torch.ones(2))
    with ContentStoreWriter(loc) as w:
        for name, t in list(tensors.items())[4:]:
            w.write_tensor(name, t)
        w.write_tensor("overwritten", torch.ones(4))
        w.delete_tensor("deleted")
    tensors["overwritten"] = torch.ones(4)
    return {name: bits(t) for name, t in tensors.items()}


class Template:
    """The undamaged store and the bytes of each of its tensors (short repr for failure reports)."""

    def __init__(self, loc: str) -> None:
        self.loc = loc
        self.expected = _write_template(loc)

    def __repr__(self) -> str:
        return f"Template({self.loc!r})"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return Template(os.fspath(tmp_path_factory.mktemp("template") / "store"))


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\ndamaged or hostile stores tried: {TRIED['stores']}")


class World:
    """A fresh copy of the template store, and a directory outside it whose content must never
    be read or changed.  The outside holds copies of the store's own files (so that following a
    link would return plausible, even correctly hashed, bytes) and a log naming ``outside/secret``."""

    def __init__(self, base: str, template: Template) -> None:
        TRIED["stores"] += 1
        base = f"{base}{TRIED['stores']}"  # a new directory per example: removing costs more
        os.makedirs(base)
        self.loc = os.path.join(base, "store")
        self.outside = os.path.join(base, "outside")
        shutil.copytree(template.loc, self.loc)
        shutil.copytree(template.loc, self.outside)
        self.expected = template.expected
        # A log that would add a name if anything followed a link to it.
        log = next(p for p in log_files(self.outside))
        with open(log, "ab") as f:
            f.write(_retarget_line(log, SECRET_NAME))
        for dirpath, _, files in os.walk(self.loc):
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o644)
        self.outside_before = _snapshot(self.outside)

    def files(self, kind: str) -> list[str]:
        if kind == "blob":
            return blob_files(self.loc)
        if kind == "log":
            return log_files(self.loc)
        if kind == "pack":
            packs = os.path.join(self.loc, "packs")
            return (
                sorted(os.path.join(packs, n) for n in os.listdir(packs))
                if os.path.isdir(packs)
                else []
            )
        raise ValueError(kind)


def _retarget_line(log: str, name: str) -> bytes:
    """A copy of the last record line of ``log`` under another name, with a valid checksum."""
    with open(log, "rb") as f:
        lines = [ln for ln in f.read().split(b"\n") if ln]
    obj = json.loads(lines[-1][17:])
    obj["name"] = name
    obj["t"] = obj.get("t", 0) + 1
    return frame(json.dumps(obj, separators=(",", ":")).encode("ascii")) if "name" in obj else b""


def _snapshot(root: str) -> dict[str, tuple[str, str]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                out[path] = ("other", "")
            else:
                with open(path, "rb") as f:
                    out[path] = ("file", hashlib.sha256(f.read()).hexdigest())
    return out


# ---------------------------------------------------------------------------------------------
# exercising a store: every way of opening and reading it


def exercise(world: World, *, content_damaged_only: bool = False) -> tensorcas.VerifyReport | None:
    """Open and read the store every way there is; only ``StoreError`` may escape each step.

    Returns verify's report, or ``None`` if verify refused the store (with a ``StoreError``).
    """
    names_seen: set[str] = set()
    for verify, mmap in ((True, False), (False, False), (True, True)):
        try:
            reader = ContentStoreReader(world.loc, verify=verify, mmap=mmap)
        except StoreError:
            continue
        names: list[str] = []
        with contextlib.suppress(StoreError):
            names = reader.list_tensors()
        names_seen.update(names)
        for name in sorted({*names, *world.expected, "deleted", SECRET_NAME}):
            try:
                record = reader.read_tensor_metadata(name)
            except StoreError:
                record = None
            try:
                tensor = reader.read_tensor(name)
            except StoreError:
                continue
            assert record is not None, f"{name} read but has no metadata"
            if verify:
                # The bytes returned are exactly those the record's digest names.
                storage = tensor.untyped_storage()
                assert storage.nbytes() == record.nbytes
                assert tensorcas.hash_storage(storage) == record.blob, name
                if content_damaged_only:
                    assert bits(tensor) == world.expected[name], name
            names_seen.add(name)
        for prefix in ("", "small", "big/", "outside"):
            with contextlib.suppress(StoreError):
                reader.list_tensors(prefix)
    assert SECRET_NAME not in names_seen, "a log outside the store was read"
    if content_damaged_only:
        assert "deleted" not in names_seen
    try:
        report: tensorcas.VerifyReport | None = tensorcas.verify(world.loc)
    except StoreError:
        report = None
    # Writing into the damaged store either works or raises StoreError; never outside it.
    try:
        with ContentStoreWriter(world.loc) as writer:
            writer.write_tensor("fresh/x", torch.arange(100_000, dtype=torch.int32))
            writer.write_tensor("fresh/y", torch.arange(3, dtype=torch.int32))
    except StoreError:
        pass
    assert _snapshot(world.outside) == world.outside_before, "something outside the store changed"
    return report


# ---------------------------------------------------------------------------------------------
# damage to bytes


@st.composite
def byte_damage(draw: st.DrawFn) -> tuple[str, int, str, int, bytes]:
    """(file kind, which file, operation, position, bytes): the position is a fraction * 2**20."""
    kind = draw(st.sampled_from(["blob", "pack", "log", "log"]))
    op = draw(
        st.sampled_from(
            ["truncate", "extend", "flip", "flip", "insert", "delete-line", "dup-line", "huge-line"]
        )
    )
    return (
        kind,
        draw(st.integers(0, 50)),
        op,
        draw(st.integers(0, 1 << 20)),
        draw(st.binary(min_size=1, max_size=40)),
    )


def apply_byte_damage(world: World, damage: tuple[str, int, str, int, bytes]) -> str | None:
    """Damage one file; return its path if its content changed."""
    kind, which, op, where, data = damage
    files = world.files(kind)
    if not files:
        return None
    path = files[which % len(files)]
    with open(path, "rb") as f:
        content = f.read()
    pos = where * max(len(content), 1) >> 20
    if op == "truncate":
        new = content[:pos]
    elif op == "extend":
        new = content + data
    elif op == "flip":
        if not content:
            return None
        i = pos % len(content)
        new = content[:i] + bytes([content[i] ^ (1 << (data[0] % 8))]) + content[i + 1 :]
    elif op == "insert":
        new = content[:pos] + data + content[pos:]
    else:
        lines = content.split(b"\n")
        # (pos may lie past the end of a file that an earlier damage emptied)
        i = min(pos * len(lines) // (len(content) + 1), len(lines) - 1)
        if op == "delete-line":
            del lines[i]
        elif op == "dup-line":
            lines.insert(i, lines[i])
        else:
            lines.insert(i, frame(b'{"op":"put","pad":"' + b"x" * (1 << 20) + b'"}')[:-1])
        new = b"\n".join(lines)
    if new == content:
        return None
    with open(path, "wb") as f:
        f.write(new)
    return path


@SETTINGS
@given(damages=st.lists(byte_damage(), min_size=1, max_size=3))
def test_damaged_bytes_are_refused_or_reported(tmp_path, template, damages):
    world = World(os.fspath(tmp_path / "w"), template)
    changed = [p for p in (apply_byte_damage(world, d) for d in damages) if p is not None]
    only_blobs = all("/blobs/" in p or "/packs/" in p for p in changed)
    report = exercise(world, content_damaged_only=only_blobs)
    if only_blobs and report is not None:
        # verify() never says ok while a tensor is damaged; when every tensor is intact, what it
        # reports can only concern blobs that no tensor uses (an overwritten or deleted one).
        reader = ContentStoreReader(world.loc, verify=True)
        intact = True
        for name, expected in world.expected.items():
            try:
                intact = intact and bits(reader.read_tensor(name)) == expected
            except tensorcas.CorruptObjectError:
                intact = False
        assert intact or not report.ok, changed
        if intact:
            assert all(not f.names for f in report.errors), report.errors


def test_truncated_blob_is_reported_with_its_tensors(tmp_path, template):
    world = World(os.fspath(tmp_path / "w"), template)
    path = max(world.files("blob"), key=os.path.getsize)
    with open(path, "r+b") as f:
        f.truncate(100)
    report = exercise(world, content_damaged_only=True)
    assert report is not None and not report.ok
    assert any("big/w" in f.names and f.kind == "wrong-size" for f in report.errors), report.errors
    with pytest.raises(tensorcas.CorruptObjectError, match="big/w"):
        ContentStoreReader(world.loc).read_tensor("big/w")


# ---------------------------------------------------------------------------------------------
# hostile records with valid checksums

RAW_VALUES = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-0",
    "1.5",
    "1" * 5000,
    "-" + "9" * 400,
    "[" * 50_000 + "]" * 50_000,
    '"\\ud800"',
    '"\\u0000"',
    "{}",
    "[]",
    "null",
    "true",
    '[1,2,"3"]',
    "[1e309]",
    '{"a":' * 3000 + "1" + "}" * 3000,
]

HOSTILE_STRINGS = [
    "",
    "..",
    "../..",
    "../../outside/secret",
    "/etc/passwd",
    "a\x00b",
    "a/./b",
    "a//b",
    "\\x",
    "a\nb",
    "object",
    "qint8",
    "quint8",
    "float32 ",
    "Float32",
    "complex32",
    "torch.float32",
    "bool",
    "blake3:" + "0" * 64,
    "blake3:" + "A" * 64,
    "sha256:" + "0" * 64,
    "blake3:" + "0" * 63,
    "x" * 5000,
    "put",
    "del",
    "blob",
    "tensorcas-log",
]


def hostile_values() -> st.SearchStrategy[Any]:
    ints = st.one_of(
        st.integers(-(2**70), 2**70),
        st.sampled_from([-1, 0, 1, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64, -(2**63)]),
    )
    return st.one_of(
        st.booleans(),
        st.none(),
        ints,
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(HOSTILE_STRINGS),
        st.text(max_size=12),
        st.lists(ints, max_size=5),
        st.lists(st.sampled_from([0, 1, 2**40, 2**62, 2**63 - 1]), min_size=1, max_size=4),
        st.lists(st.integers(0, 3), min_size=65, max_size=70),
        st.lists(
            st.one_of(st.booleans(), st.floats(allow_nan=False), st.text(max_size=2)),
            min_size=1,
            max_size=3,
        ),
        st.dictionaries(st.text(max_size=3), ints, max_size=2),
        st.lists(st.lists(ints, max_size=2), min_size=1, max_size=2),
    )


@st.composite
def record_tamper(draw: st.DrawFn) -> tuple[Any, ...]:
    """How to rewrite one log line: a field set to a hostile value, a raw JSON token spliced in,
    a duplicated key, a whole new view (shape, stride, offset), or another blob's digest."""
    how = draw(st.sampled_from(["field", "field", "field", "raw", "dup", "view", "digest", "line"]))
    which = draw(st.integers(0, 1000))
    if how == "field":
        return how, which, draw(st.integers(0, 20)), draw(hostile_values())
    if how == "raw":
        return how, which, draw(st.integers(0, 20)), draw(st.sampled_from(RAW_VALUES))
    if how == "dup":
        return how, which, draw(st.integers(0, 20)), draw(hostile_values())
    if how == "view":
        ndim = draw(st.integers(0, 4))
        dims = st.one_of(st.integers(0, 64), st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1]))
        shape = draw(st.lists(dims, min_size=ndim, max_size=ndim))
        stride = draw(st.lists(dims, min_size=ndim, max_size=ndim))
        return how, which, shape, stride, draw(st.one_of(st.integers(0, 200_000), dims))
    if how == "digest":
        return how, which, draw(st.integers(0, 20)), draw(st.integers(0, 2**64))
    whole = st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(st.sampled_from(["op", "name", "t", "x"]), c, max_size=3)
        ),
        max_leaves=6,
    )
    return how, which, draw(whole), draw(st.booleans())


def apply_record_tamper(world: World, tamper: tuple[Any, ...]) -> None:
    """Rewrite one line of one log under a valid checksum (or add one, for ``line``)."""
    how, which = tamper[0], tamper[1]
    logs = world.files("log")
    path = logs[which % len(logs)]
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")[:-1]
    i = (which // len(logs)) % len(lines)
    try:
        obj = json.loads(lines[i][17:])
    except (ValueError, RecursionError):
        return  # an earlier tamper made this line unparsable; it stays as it is
    if how != "line" and (not isinstance(obj, dict) or not obj):
        return  # an earlier tamper made this line something other than a record
    keys = sorted(obj) if isinstance(obj, dict) else []
    if how == "line":
        body = json.dumps(tamper[2], separators=(",", ":")).encode()
        if tamper[3]:
            lines[i] = frame(body)[:-1]
        else:
            lines.append(frame(body)[:-1])
    else:
        if how == "field":
            obj[keys[tamper[2] % len(keys)]] = tamper[3]
        elif how == "view":
            if "shape" not in obj:
                return
            obj["shape"], obj["stride"], obj["offset"] = tamper[2], tamper[3], tamper[4]
        elif how == "digest":
            digests = sorted(
                {
                    "blake3:" + os.path.basename(os.path.dirname(p)) + os.path.basename(p)
                    for p in world.files("blob")
                }
            )
            digests.append("blake3:" + blake3.blake3(str(tamper[3]).encode()).hexdigest())
            field = "blob" if "blob" in obj else keys[tamper[2] % len(keys)]
            obj[field] = digests[tamper[2] % len(digests)]
        if how == "raw":
            key = keys[tamper[2] % len(keys)]
            obj[key] = "\x01RAW\x01"
            body = (
                json.dumps(obj, separators=(",", ":"))
                .replace('"\\u0001RAW\\u0001"', tamper[3])
                .encode()
            )
        elif how == "dup":
            key = keys[tamper[2] % len(keys)]
            body = json.dumps(obj, separators=(",", ":")).encode()
            body = body[:-1] + b"," + json.dumps({key: tamper[3]})[1:].encode()
        else:
            try:
                body = json.dumps(obj, separators=(",", ":")).encode()
            except ValueError:  # an integer too long for str(): splice its digits by hand
                obj_text = {
                    k: (v if not isinstance(v, int) or abs(v) < 10**4000 else "\x01BIG\x01")
                    for k, v in obj.items()
                }
                body = (
                    json.dumps(obj_text, separators=(",", ":"))
                    .replace('"\\u0001BIG\\u0001"', "9" * 5000)
                    .encode()
                )
        lines[i] = frame(body)[:-1]
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")


@SETTINGS
@given(tampers=st.lists(record_tamper(), min_size=1, max_size=3))
def test_hostile_records_raise_only_store_errors(tmp_path, template, tampers):
    world = World(os.fspath(tmp_path / "w"), template)
    for tamper in tampers:
        apply_record_tamper(world, tamper)
    exercise(world)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nbytes", 2**62),
        ("nbytes", 2**63 - 1),
        ("shape", [2**62]),
        ("shape", [2**31, 2**31]),
        ("stride", [2**62]),
        ("offset", 2**62),
        ("requires_grad", 1),
        ("shape", [True]),
        ("dtype", "object"),
        ("dtype", "qint8"),
        ("name", "../../etc/passwd"),
        ("blob", "blake3:" + "0" * 64),
    ],
)
def test_single_hostile_fields_on_the_large_tensor(tmp_path, template, field, value):
    """Pinned cases: each hostile field on the record of the large tensor ``big/w``."""
    world = World(os.fspath(tmp_path / "w"), template)
    for path in world.files("log"):
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")[:-1]
        for i, line in enumerate(lines):
            obj = json.loads(line[17:])
            if obj.get("name") == "big/w":
                obj[field] = value
                lines[i] = frame(json.dumps(obj, separators=(",", ":")).encode())[:-1]
        with open(path, "wb") as f:
            f.write(b"\n".join(lines) + b"\n")
    exercise(world)
    reader = ContentStoreReader(world.loc, verify=True)
    try:
        got = reader.read_tensor("big/w")
    except StoreError:
        return
    assert bits(got) == world.expected["big/w"]  # the hostile record was refused


# ---------------------------------------------------------------------------------------------
# the store marker

MARKERS: dict[str, Callable[[str], None]] = {
    "missing": lambda p: os.remove(p),
    "empty": lambda p: open(p, "wb").close(),
    "garbage": lambda p: _write(p, b"\x00\xff garbage"),
    "not-json-object": lambda p: _write(p, b"[1, 2]"),
    "other-format": lambda p: _write(p, b'{"format": "zarr", "version": 1, "digest": "blake3"}'),
    "version-2": lambda p: _write(p, b'{"format": "tensorcas", "version": 2, "digest": "blake3"}'),
    "version-bool": lambda p: _write(
        p, b'{"format": "tensorcas", "version": true, "digest": "blake3"}'
    ),
    "version-float": lambda p: _write(
        p, b'{"format": "tensorcas", "version": 1.0, "digest": "blake3"}'
    ),
    "version-nan": lambda p: _write(
        p, b'{"format": "tensorcas", "version": NaN, "digest": "blake3"}'
    ),
    "other-digest": lambda p: _write(
        p, b'{"format": "tensorcas", "version": 1, "digest": "sha256"}'
    ),
    "deep": lambda p: _write(p, b"[" * 100_000 + b"]" * 100_000),
    "huge-int": lambda p: _write(
        p, b'{"format": "tensorcas", "version": ' + b"1" * 10_000 + b', "digest": "blake3"}'
    ),
    "huge": lambda p: _write(
        p, b" " * (1 << 20) + b'{"format": "tensorcas", "version": 1, "digest": "blake3"}'
    ),
    "utf16": lambda p: _write(
        p, '{"format": "tensorcas", "version": 1, "digest": "blake3"}'.encode("utf-16")
    ),
    "directory": lambda p: (os.remove(p), os.mkdir(p)),
    "fifo": lambda p: (os.remove(p), os.mkfifo(p)),
    "symlink-outside": lambda p: (os.remove(p), os.symlink(p.replace("/store/", "/outside/"), p)),
    "dangling-symlink": lambda p: (os.remove(p), os.symlink(p + ".nowhere", p)),
}


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("how", sorted(MARKERS))
def test_bad_store_marker(tmp_path, template, how):
    world = World(os.fspath(tmp_path / "w"), template)
    MARKERS[how](os.path.join(world.loc, "tensorcas.json"))
    with pytest.raises(StoreError):
        ContentStoreReader(world.loc)
    with pytest.raises(StoreError):
        tensorcas.verify(world.loc)
    exercise(world)


# ---------------------------------------------------------------------------------------------
# symlinks, FIFOs and directories in place of the store's files


def _targets(world: World) -> dict[str, str]:
    blob = max(world.files("blob"), key=os.path.getsize)
    targets = {
        "blob": blob,
        "blob-dir": os.path.dirname(blob),
        "blobs": os.path.join(world.loc, "blobs"),
        "log": world.files("log")[0],
        "logs": os.path.join(world.loc, "logs"),
    }
    if world.files("pack"):
        targets["pack"] = world.files("pack")[0]
        targets["packs"] = os.path.join(world.loc, "packs")
    return targets


def _replace(path: str, how: str, outside_twin: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)
    if how == "symlink-outside":
        os.symlink(outside_twin, path)  # the twin holds the very same bytes
    elif how == "symlink-loop":
        os.symlink(path, path)
    elif how == "symlink-dev-zero":
        os.symlink("/dev/zero", path)
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "directory":
        os.mkdir(path)
        with open(os.path.join(path, "x"), "wb") as f:
            f.write(b"x")
    elif how == "file":
        with open(path, "wb") as f:
            f.write(b"not a directory")


@pytest.mark.parametrize(
    "how", ["symlink-outside", "symlink-loop", "symlink-dev-zero", "fifo", "directory", "file"]
)
@pytest.mark.parametrize("target", ["blob", "blob-dir", "blobs", "log", "logs", "pack", "packs"])
def test_special_files_in_place_of_store_files(tmp_path, template, target, how):
    world = World(os.fspath(tmp_path / "w"), template)
    targets = _targets(world)
    if target not in targets:
        pytest.skip("this store has no packs")
    path = targets[target]
    was_dir = os.path.isdir(path)
    if how == "file" and not was_dir:
        pytest.skip("already a file")
    twin = path.replace(world.loc, world.outside, 1)
    _replace(path, how, twin)
    report = exercise(world)
    if how == "symlink-outside":
        # Following the link would find sound bytes and logs: the store must still refuse it.
        reader = None
        with contextlib.suppress(StoreError):
            reader = ContentStoreReader(world.loc, verify=True)
        if reader is not None and target in ("blob", "blob-dir", "blobs"):
            with pytest.raises(StoreError):
                reader.read_tensor("big/w")
        if report is not None and target in ("blob", "blob-dir", "blobs", "pack", "packs"):
            assert not report.ok, "verify accepted a blob reached through a symlink"


def test_an_empty_shape_torch_cannot_make_is_refused(tmp_path):
    """[2**31, 2**62, 0] holds no element, but torch multiplies every size with an overflow check
    and cannot make it: the record is refused as damaged, never handed to torch."""
    loc = os.fspath(tmp_path / "store")
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.ones(1))
    with open(log_files(loc)[0], "rb") as f:
        record = json.loads(f.read().splitlines()[-2][17:])
    assert record["op"] == "put"
    record.update(name="empty", t=record["t"] + 1, shape=[2**31, 2**62, 0], stride=[0, 0, 0])
    with open(log_files(loc)[0], "ab") as f:
        f.write(frame(json.dumps(record, separators=(",", ":")).encode("ascii")))
    reader = ContentStoreReader(loc)
    with pytest.raises(tensorcas.CorruptObjectError, match="2\\*\\*63"):
        reader.read_tensor("empty")
    assert torch.equal(reader.read_tensor("x"), torch.ones(1))
