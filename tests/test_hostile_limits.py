"""Hostile stores that attack resources rather than values: memory, address space, descriptors,
path lengths, and the two ways of reading a put line.  Each store here is crafted the way
docs/FORMAT.md describes a store, by a test that knows the layout; the promise is the one of
docs/guarantees.md: only ``StoreError``, in bounded memory, time and descriptors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import tensorcas
from storetools import frame, frame_obj
from tensorcas import ContentStoreReader, ContentStoreWriter, StoreError
from tensorcas import format as fmt
from tensorcas.backends.memory import MemoryBackend
from tensorcas.format._json import json_str
from tensorcas.format.entries import _PUT_KEYS
from tensorcas.maintenance import ImportSourceError
from tensorcas.store import Store

HEADER = b'{"format":"tensorcas-log","version":1,"writer":"0000-1-planted"}'
PLANTED_LOG = "0000-1-planted.log"
DIGEST = "blake3:" + "ab" * 32


def _where(finding: tensorcas.Finding) -> str:
    """Where a finding was found: its message starts with the place, then ``: ``."""
    return finding.message.split(": ", 1)[0]


def _plant_log(loc: str, body: bytes, name: str = PLANTED_LOG) -> str:
    path = os.path.join(loc, "logs", name)
    with open(path, "wb") as f:
        f.write(frame(HEADER) + body)
    return path


def _put(name: str, t: int, nbytes: int = 16, blob: str = DIGEST, **over: object) -> bytes:
    obj: dict[str, object] = {
        "op": "put",
        "t": t,
        "name": name,
        "dtype": "float32",
        "shape": [nbytes // 4],
        "stride": [1],
        "offset": 0,
        "requires_grad": False,
        "blob": blob,
        "nbytes": nbytes,
    }
    obj.update(over)
    return frame_obj(obj)


@pytest.fixture
def small_store(loc: str) -> str:
    with ContentStoreWriter(loc) as w:
        w.write_tensor("a", torch.arange(4.0))
    return loc


def _run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# ---------------------------------------------------------------------------------------------
# 1. a damaged log costs bounded memory however many bad lines it has


def test_a_million_damaged_lines_cost_bounded_memory(small_store):
    _plant_log(small_store, b"\n" * 1_000_000 + b"x\n" * 200_000 + (b"y" * 40 + b"\n") * 20_000)
    tracemalloc.start()
    try:
        store = Store.open(small_store, read_only=True)
        store.refresh()
        problems = store.problems()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 48 << 20, f"reading the log peaked at {peak >> 20} MiB"
    assert store.names() == ["a"]
    planted = [p for p in problems if PLANTED_LOG in p.message]
    assert len(planted) <= 2 * findings_limit()
    # The count of every damaged line survives, with the first few examples.
    summary = [p for p in planted if "1220000 damaged lines" in p.message]
    assert summary, [p.message for p in planted][-3:]
    assert any(" line 2: " in p.message for p in planted)


def findings_limit() -> int:
    from tensorcas import records

    return records.MAX_FINDINGS_PER_LOG


def test_verify_and_gc_report_the_true_count_of_damaged_lines(small_store):
    _plant_log(small_store, b"\n" * 100_000)
    report = tensorcas.verify(small_store)
    assert not report.ok
    assert len(report.findings) <= 2 * findings_limit() + 1
    assert any("100000 damaged lines" in f.message for f in report.findings)
    with pytest.raises(StoreError, match="100000 unreadable log line"):
        tensorcas.gc(small_store, grace_seconds=0)


def test_damaged_records_found_in_strict_mode_are_bounded_too(small_store):
    # Lines whose checksum, op, time and name are sound but whose record is not: verify validates
    # every one of them (strict mode) and keeps only the first few.
    lines = b"".join(_put(f"n{i}", i + 1, dtype="object") for i in range(3000))
    _plant_log(small_store, lines)
    store = Store.open(small_store, read_only=True, strict=True)
    store.refresh()
    planted = [p for p in store.problems() if PLANTED_LOG in p.message]
    assert len(planted) <= findings_limit() + 1
    assert any("3000 damaged lines" in p.message for p in planted)


# ---------------------------------------------------------------------------------------------
# 2. sparse and huge files


def _sparse(path: str, size: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def test_a_blob_too_large_to_allocate_is_a_store_error(small_store):
    nbytes = 1 << 40  # 1 TiB, more than this machine can allocate or commit
    _sparse(os.path.join(small_store, *fmt.blob_key(DIGEST).split("/")), nbytes)
    _plant_log(small_store, _put("huge", 10**18, nbytes=nbytes))
    for mmap in (False, True):
        reader = ContentStoreReader(small_store, mmap=mmap)
        assert reader.read_tensor_metadata("huge").nbytes == nbytes
        with pytest.raises(tensorcas.ResourceLimitError, match="huge"):
            reader.read_tensor("huge")
        with pytest.raises(tensorcas.ResourceLimitError):
            reader.read_storage(DIGEST)


def test_a_huge_packed_blob_is_a_store_error(small_store):
    nbytes = 1 << 40
    _sparse(os.path.join(small_store, "packs", "0000-1-planted-1.pack"), nbytes)
    blob = frame_obj(
        {"op": "blob", "blob": DIGEST, "nbytes": nbytes, "pack": "0000-1-planted-1", "offset": 0}
    )
    _plant_log(small_store, blob + _put("huge", 10**18, nbytes=nbytes))
    reader = ContentStoreReader(small_store)
    with pytest.raises(tensorcas.ResourceLimitError, match="huge"):
        reader.read_tensor("huge")


def test_verify_of_huge_sparse_blobs_streams_in_bounded_memory(tmp_path):
    """A loose blob and a packed one of 1 GiB each, verified under an address-space limit of
    512 MiB above what the process had: read and hashed a piece at a time, never whole."""
    loc = os.fspath(tmp_path / "store")
    with ContentStoreWriter(loc) as w:
        w.write_tensor("a", torch.arange(4.0))
    nbytes = 1 << 30
    packed = "blake3:" + "cd" * 32
    _sparse(os.path.join(loc, *fmt.blob_key(DIGEST).split("/")), nbytes)
    _sparse(os.path.join(loc, "packs", "0000-1-planted-1.pack"), nbytes + 100)
    place = frame_obj(
        {"op": "blob", "blob": packed, "nbytes": nbytes, "pack": "0000-1-planted-1", "offset": 100}
    )
    _plant_log(
        loc,
        _put("huge", 2**62, nbytes=nbytes)
        + place
        + _put("packed", 2**62, nbytes=nbytes, blob=packed),
    )
    out = _run_python(
        f"""
        import resource, json, tensorcas
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) << 10
        resource.setrlimit(resource.RLIMIT_AS, (vm + (512 << 20), resource.RLIM_INFINITY))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report = tensorcas.verify({loc!r})
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps([after - before, report.bytes_checked, sorted(f.kind for f in report.findings)]))
        """,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    grown_kib, checked, kinds = json.loads(out.stdout.strip().splitlines()[-1])
    assert checked >= 2 * nbytes
    assert kinds == ["damaged-blob", "damaged-blob"]  # zeros do not hash to the planted digests
    assert grown_kib < 200 << 10, f"verify grew by {grown_kib >> 10} MiB"


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise AssertionError("no rchar")


needs_proc_io = pytest.mark.skipif(
    not os.path.exists("/proc/self/io"), reason="needs /proc/self/io"
)


def _sparse_log(path: str, size: int, every: int, tail: bytes) -> None:
    """A log of ``size`` bytes, almost all holes: the header, one newline every ``every`` bytes
    (each line is a hole of zeros, so damaged), then ``tail`` (sound lines)."""
    with open(path, "wb") as f:
        f.write(frame(HEADER))
        for pos in range(every, size, every):
            f.seek(pos)
            f.write(b"\n")
        f.seek(size)
        f.write(tail)


@needs_proc_io
def test_a_huge_sparse_log_costs_what_is_really_there(small_store):
    size = 2 << 30
    every = 8 << 20  # each hole is a line of 8 MiB: damaged, but within the reader's window
    path = os.path.join(small_store, "logs", PLANTED_LOG)
    record = ContentStoreReader(small_store).read_tensor_metadata("a")
    _sparse_log(path, size, every, b"\n" + _put("after-holes", 2**62, blob=record.blob))
    assert os.stat(path).st_blocks * 512 < 64 << 20  # really sparse here
    before = _bytes_read()
    reader = ContentStoreReader(small_store)
    names = reader.list_tensors()
    read = _bytes_read() - before
    assert names == ["a", "after-holes"]  # lines after the holes still apply
    assert read < 64 << 20, f"opening read {read >> 20} MiB of a log with {size >> 20} MiB of holes"
    problems = [p for p in reader.store.problems() if PLANTED_LOG in p.message]
    assert any(f"{size // every} damaged lines" in p.message for p in problems), [
        p.message for p in problems
    ]


@pytest.mark.parametrize(
    "layout",
    [
        [(0, b"\n")],  # a hole right after the header, ending in a newline
        [(70_000, b"\n")],
        [(5000, b"abc"), (90_000, b"\n")],  # data inside a damaged line between two holes
        [(100_000, b"")],  # a hole up to the end: a torn tail of zeros
        [(3 << 20, b"\n")],  # a line longer than the window: the rest of the log is ignored
    ],
)
def test_holes_read_exactly_like_zeros(small_store, monkeypatch, layout):
    """Skipping holes is an optimisation: a reader that reads every byte (the memory backend)
    sees the same names and the same damage, line by line."""
    from tensorcas import records

    monkeypatch.setattr(records, "LOG_WINDOW", 1 << 20)
    record = ContentStoreReader(small_store).read_tensor_metadata("a")
    path = os.path.join(small_store, "logs", PLANTED_LOG)
    good = _put("b", 10**18, blob=record.blob)
    with open(path, "wb") as f:
        f.write(frame(HEADER) + good)
        for gap, data in layout:
            f.seek(gap, os.SEEK_CUR)
            f.write(data)
        if layout[-1][1]:
            f.write(_put("c", 10**18 + 1, blob=record.blob))
    memory = MemoryBackend()
    for dirpath, _, files in os.walk(small_store):
        for name in files:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                memory.put_if_absent(
                    os.path.relpath(full, small_store).replace(os.sep, "/"), f.read()
                )
    results = []
    for loc in (small_store, memory):
        store = Store.open(loc, read_only=True)
        store.refresh()
        problems = sorted((_where(p), p.severity) for p in store.problems())
        results.append((store.names(), problems))
    assert results[0] == results[1]


# ---------------------------------------------------------------------------------------------
# 3. descriptors: readers adapt to the process's limit


@pytest.fixture(scope="module")
def many_packs(tmp_path_factory) -> str:
    loc = os.fspath(tmp_path_factory.mktemp("packs") / "store")
    for i in range(100):
        with ContentStoreWriter(loc) as w:
            w.write_tensor(f"t{i}", torch.full((3,), float(i)))
    assert len(os.listdir(os.path.join(loc, "packs"))) == 100
    return loc


def test_readers_adapt_to_the_descriptor_limit(many_packs):
    """Under a limit of 64 descriptors, and of 1024: as many readers as the limit would have
    allowed 64 descriptors each read every pack, and the process's own opens still work; then,
    with every descriptor but three taken by the process, a reader still reads every pack."""
    out = _run_python(
        f"""
        import os, resource
        import tensorcas
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        for limit in (64, 1024):
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
            readers = [tensorcas.ContentStoreReader({many_packs!r}, cache=False) for _ in range(limit // 32 + 16)]
            for r in readers:
                for i in range(100):
                    assert r.read_tensor(f"t{{i}}")[0].item() == float(i)
            fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(limit // 2)]
            for fd in fds:
                os.close(fd)
            del readers
        reader = tensorcas.ContentStoreReader({many_packs!r}, cache=False)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        held = []
        try:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        for fd in held[-3:]:
            os.close(fd)
        for _ in range(2):
            for i in range(100):
                assert reader.read_tensor(f"t{{i}}")[0].item() == float(i)
        print("ok")
        """
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok")


# ---------------------------------------------------------------------------------------------
# 4. junk directory chains too deep for a path


def _deep_chain(top: str, depth: int) -> None:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d" * 200, dir_fd=fd)
            nxt = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("x.log", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(b"junk\n")
    finally:
        os.close(fd)


def _remove_chain(top: str) -> None:
    """Remove a chain ``_deep_chain`` made under ``top`` (too deep for paths: by descriptors)."""
    link = "d" * 200
    fds = [os.open(os.path.join(top, link), os.O_RDONLY | os.O_DIRECTORY)]
    while True:
        names = os.listdir(fds[-1])
        for n in names:
            if n != link:
                os.unlink(n, dir_fd=fds[-1])
        if link not in names:
            break
        fds.append(os.open(link, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
    while len(fds) > 1:
        os.close(fds.pop())
        os.rmdir(link, dir_fd=fds[-1])
    os.close(fds[0])
    os.rmdir(os.path.join(top, link))


@pytest.mark.parametrize("where", ["logs", "blobs", "blobs/12", "packs"])
def test_deep_junk_directories_are_ignored(loc, where):
    with ContentStoreWriter(loc) as w:
        w.write_tensor("small", torch.arange(4.0))
        w.write_tensor("big", torch.arange(20_000.0))
        w.write_tensor("gone", torch.arange(30_000.0))
        w.delete_tensor("gone")
    top = os.path.join(loc, *where.split("/"))
    os.makedirs(top, exist_ok=True)
    _deep_chain(top, 30)  # 6000 bytes of path: more than PATH_MAX
    try:
        reader = ContentStoreReader(loc)
        assert reader.list_tensors() == ["small", "big"]
        assert reader.read_tensor("big")[-1].item() == 19_999.0
        assert tensorcas.verify(loc).ok
        report = tensorcas.gc(loc, grace_seconds=0)
        assert len(report.removed_blobs) == 1
        assert ContentStoreReader(loc, verify=True).read_tensor("big")[-1].item() == 19_999.0
    finally:
        _remove_chain(top)


# ---------------------------------------------------------------------------------------------
# 5. the fast and the JSON path of reading a put line agree (FORMAT.md section 4.5)


_ESCAPED = '模型/é"q 🙂'


def _model(name: str, line: bytes) -> fmt.TensorRecord | str | None:
    """What FORMAT.md section 4.5 says a reader makes of one damaged put ``line`` (checksum valid)
    that follows an older sound record of ``name``: ``None`` (it takes no part: the older record
    stands), ``"damaged"`` (the name is reported damaged), or the new record."""
    try:
        obj = json.loads(
            line[17:-1].decode("utf-8"),
            object_pairs_hook=_strict_pairs,
            parse_constant=_no_constant,
        )
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # not strict JSON: nothing in it can be read
    if not isinstance(obj, dict) or obj.get("op") != "put" or set(obj) != _PUT_KEYS:
        return None  # not a put entry at all
    if type(obj["t"]) is not int or not 0 <= obj["t"] <= fmt.MAX_INT or obj["name"] != name:
        return None
    shape, stride = obj["shape"], obj["stride"]
    if not isinstance(shape, list) or not isinstance(stride, list):
        return "damaged"
    record = fmt.TensorRecord(
        name,
        obj["dtype"],
        tuple(shape),
        tuple(stride),
        obj["offset"],
        obj["requires_grad"],
        obj["blob"],
        obj["nbytes"],
    )
    try:
        fmt.validate_record(record, check_name=False)
    except (StoreError, TypeError):
        return "damaged"
    return record


def _strict_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def _no_constant(value: str) -> object:
    raise ValueError(value)


_TAIL_EDITS = st.one_of(
    st.tuples(st.just("cut"), st.integers(0, 400)),
    st.tuples(
        st.just("insert"),
        st.integers(0, 400),
        st.sampled_from(
            [
                b"",
                b",",
                b"}",
                b" ",
                b'"',
                b"\\",
                b"1",
                b"[",
                b"\x00",
                b"\xff",
                b'"x":1,',
                b'"name":"z",',
                b"-",
                b"1e3",
                b"NaN",
            ]
        ),
    ),
    st.tuples(st.just("replace"), st.integers(0, 400), st.binary(min_size=1, max_size=3)),
)


def _edit(line: bytes, name_end: int, edit: tuple) -> bytes:
    """Apply ``edit`` to the body after the name, and frame it again (a valid checksum)."""
    body = line[17:-1]
    head, tail = body[:name_end], body[name_end:]
    pos = edit[1] % (len(tail) + 1)
    if edit[0] == "cut":
        tail = tail[:pos]
    elif edit[0] == "insert":
        tail = tail[:pos] + edit[2] + tail[pos:]
    else:
        tail = tail[:pos] + edit[2] + tail[pos + len(edit[2]) :]
    return frame(head + tail)


@pytest.fixture(scope="module")
def two_names(tmp_path_factory) -> tuple[str, dict[str, fmt.TensorRecord]]:
    loc = os.fspath(tmp_path_factory.mktemp("paths") / "store")
    with ContentStoreWriter(loc) as w:
        w.write_tensor("plain/name", torch.arange(4.0))
        w.write_tensor(_ESCAPED, torch.arange(4.0))
    reader = ContentStoreReader(loc)
    return loc, {n: reader.read_tensor_metadata(n) for n in ("plain/name", _ESCAPED)}


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits=st.lists(_TAIL_EDITS, min_size=1, max_size=3))
@example(edits=[("insert", 0, b"}")])  # invalid JSON right after the name
@example(edits=[("replace", 10, b"x")])
@example(edits=[("insert", 400, b'"x":1,')])
def test_fast_and_json_paths_agree_on_damaged_put_lines(two_names, edits):
    base_loc, records = two_names
    kinds = {}
    for name, record in records.items():
        line = fmt.encode_put(record, 2**62)  # newer than the sound record
        name_end = line[17:].index(b'"name":') + len(b'"name":') + len(json_str(name).encode())
        damaged = line
        for edit in edits:
            damaged = _edit(damaged, name_end, edit)
        expected = _model(name, damaged)
        backend = MemoryBackend()
        for key in _keys(base_loc):
            with open(os.path.join(base_loc, *key.split("/")), "rb") as f:
                backend.put_if_absent(key, f.read())
        backend.put_if_absent(f"logs/{PLANTED_LOG}", frame(HEADER) + damaged)
        store = Store.open(backend, read_only=True)
        try:
            got: fmt.TensorRecord | str = store.get_record(name)
        except tensorcas.CorruptObjectError:
            got = "damaged"
        assert got == (record if expected is None else expected), (name, damaged)
        kinds[name] = "old" if expected is None else "damaged" if expected == "damaged" else "new"
    assert len(set(kinds.values())) == 1, kinds  # an escaped name is no different from a plain one


def _keys(root: str) -> Iterator[str]:
    for dirpath, _, files in os.walk(root):
        for name in files:
            yield os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")


# ---------------------------------------------------------------------------------------------
# 6. minor ones: hard links, import sources, planted trash, full disks


def _outside_twin(path: str, outside: str) -> float:
    """Replace ``path`` by a hard link to a file outside the store with the same bytes, whose
    mtime is a year old; return that mtime."""
    with open(path, "rb") as f:
        data = f.read()
    with open(outside, "wb") as f:
        f.write(data)
    old = time.time() - 365 * 86400
    os.utime(outside, (old, old))
    os.unlink(path)
    os.link(outside, path)
    return os.stat(outside).st_mtime


@pytest.mark.parametrize("kind", ["blob", "pack"])
def test_a_hard_link_to_an_outside_file_is_never_touched(tmp_path, kind):
    loc = os.fspath(tmp_path / "store")
    small, big = torch.arange(5.0), torch.arange(40_000.0)
    with ContentStoreWriter(loc) as w:
        w.write_tensor("small", small)
        w.write_tensor("big", big)
    if kind == "blob":
        digest = ContentStoreReader(loc).read_tensor_metadata("big").blob
        path = os.path.join(loc, *fmt.blob_key(digest).split("/"))
    else:
        (pack,) = os.listdir(os.path.join(loc, "packs"))
        path = os.path.join(loc, "packs", pack)
    outside = os.fspath(tmp_path / "outside")
    mtime = _outside_twin(path, outside)
    with ContentStoreWriter(loc) as w:  # reuses the stored bytes: would touch them
        w.write_tensor("small2", small)
        w.write_tensor("big2", big)
    for background in (True,):
        with ContentStoreWriter(loc, background=background) as w:
            w.write_tensor("small3", small)
            w.write_tensor("big3", big)
    assert os.stat(outside).st_mtime == mtime
    reader = ContentStoreReader(loc, verify=True)
    assert torch.equal(reader.read_tensor("big3"), big) and torch.equal(
        reader.read_tensor("small3"), small
    )
    assert tensorcas.verify(loc).ok


def _torch_content_store(path: str) -> None:
    from torch.utils._content_store import ContentStoreWriter as TorchWriter

    writer = TorchWriter(path)
    writer.write_tensor("w", torch.arange(6.0))


def test_import_refuses_symlinked_source_directories(tmp_path):
    src = os.fspath(tmp_path / "src")
    _torch_content_store(src)
    for sub in ("storages", "tensors"):
        real = os.fspath(tmp_path / f"elsewhere-{sub}")
        os.rename(os.path.join(src, sub), real)
        os.symlink(real, os.path.join(src, sub))
        with pytest.raises(ImportSourceError, match="symlink"):
            tensorcas.import_store(os.fspath(tmp_path / "dst"), src)
        os.unlink(os.path.join(src, sub))
        os.rename(real, os.path.join(src, sub))
    report = tensorcas.import_store(os.fspath(tmp_path / "dst"), src)
    assert report.names == ["w"]


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("where", ["source", "storage", "tensor"])
def test_import_of_a_fifo_refuses_without_waiting(tmp_path, where):
    if where == "source":
        src = os.fspath(tmp_path / "fifo")
        os.mkfifo(src)
    else:
        src = os.fspath(tmp_path / "src")
        _torch_content_store(src)
        sub = "storages" if where == "storage" else "tensors"
        (victim,) = os.listdir(os.path.join(src, sub))
        os.unlink(os.path.join(src, sub, victim))
        os.mkfifo(os.path.join(src, sub, victim))
    with _deadline(20), pytest.raises(ImportSourceError):
        tensorcas.import_store(os.fspath(tmp_path / "dst"), src)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_gc_never_turns_planted_trash_into_names(small_store, tmp_path, kind):
    """Planted ``.gc-*`` and ``.tmp-*`` entries that are not regular files: gc neither makes
    them visible nor stops at them."""
    with ContentStoreWriter(small_store) as w:
        w.write_tensor("big", torch.arange(20_000.0))
    outside = os.fspath(tmp_path / "outside")
    with open(outside, "wb") as f:
        f.write(b"x" * 80_000)
    planted = []
    for directory, base in (
        ("blobs/cd", "ef" * 31),
        ("packs", "0000-9-x.pack"),
        ("logs", "0000-9-x.log"),
    ):
        path = os.path.join(small_store, *directory.split("/"))
        os.makedirs(path, exist_ok=True)
        # A planted temporary of the same kind must not stop gc either.
        for trash in (
            os.path.join(path, f".gc-{base}.0123abcd"),
            os.path.join(path, ".tmp-" + "0" * 32),
        ):
            if kind == "symlink":
                os.symlink(outside, trash)
            elif kind == "fifo":
                os.mkfifo(trash)
            else:
                os.mkdir(trash)
            old = time.time() - 7200
            os.utime(trash, (old, old), follow_symlinks=False)
        planted.append(os.path.join(path, base))
    with _deadline(20):
        tensorcas.gc(small_store, grace_seconds=0)
    for path in planted:
        assert not os.path.lexists(path), f"gc made {path} visible"
    assert ContentStoreReader(small_store).list_tensors() == ["a", "big"]
    assert tensorcas.verify(small_store).ok


def test_a_full_disk_leaves_no_empty_pack_or_log_per_failed_write(loc, monkeypatch):
    from tensorcas.backends import local_files as local_backend

    with ContentStoreWriter(loc) as w:
        w.write_tensor("before", torch.arange(3.0))
    packs_before = set(os.listdir(os.path.join(loc, "packs")))
    logs_before = set(os.listdir(os.path.join(loc, "logs")))

    class FullDisk:
        """``os`` with every write failing as on a full disk."""

        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        @staticmethod
        def write(fd: int, data: object) -> int:
            raise OSError(28, os.strerror(28))

    writer = ContentStoreWriter(loc)
    with monkeypatch.context() as m:
        m.setattr(local_backend, "os", FullDisk())
        for i in range(38):
            with pytest.raises(tensorcas.StoreIOError):
                writer.write_tensor(f"t{i}", torch.full((3,), float(i)))
    writer.write_tensor("after", torch.arange(7.0))  # the disk has room again
    writer.close()
    new_packs = set(os.listdir(os.path.join(loc, "packs"))) - packs_before
    new_logs = set(os.listdir(os.path.join(loc, "logs"))) - logs_before
    assert len(new_packs) <= 2, sorted(new_packs)
    assert len(new_logs) <= 2, sorted(new_logs)
    assert ContentStoreReader(loc, verify=True).read_tensor("after").tolist() == list(range(7))
    report = tensorcas.verify(loc)
    assert report.ok, report.findings


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    layout=st.lists(
        st.tuples(
            st.integers(0, 40),  # a hole of this many 4 KiB blocks before the piece (0: none)
            st.lists(st.sampled_from([b"\n", b"x", b"sound", b"\x00"]), max_size=4),
        ),
        min_size=1,
        max_size=6,
    ),
    window_kib=st.sampled_from([8, 64, 1024]),
)
def test_sparse_logs_read_like_their_bytes(tmp_path, monkeypatch, layout, window_kib):
    """Any arrangement of holes, junk, sound lines and newlines: the sparse reader and a reader
    of every byte agree on names and damage, line by line."""
    from tensorcas import records

    monkeypatch.setattr(records, "LOG_WINDOW", window_kib << 10)
    loc = os.fspath(tmp_path / f"s{len(os.listdir(tmp_path))}")
    with ContentStoreWriter(loc) as w:
        w.write_tensor("a", torch.arange(4.0))
    blob = ContentStoreReader(loc).read_tensor_metadata("a").blob
    path = os.path.join(loc, "logs", PLANTED_LOG)
    with open(path, "wb") as f:
        f.write(frame(HEADER))
        for i, (blocks, pieces) in enumerate(layout):
            f.seek(blocks * 4096, os.SEEK_CUR)
            for j, piece in enumerate(pieces):
                f.write(_put(f"n{i}.{j}", 2**62, blob=blob) if piece == b"sound" else piece)
    memory = MemoryBackend()
    for key in _keys(loc):
        with open(os.path.join(loc, *key.split("/")), "rb") as f:
            memory.put_if_absent(key, f.read())
    results = []
    for where in (loc, memory):
        store = Store.open(where, read_only=True)
        store.refresh()
        results.append(
            (store.names(), sorted((_where(p), p.severity, p.count) for p in store.problems()))
        )
    assert results[0] == results[1]


def test_import_refuses_a_source_directory_it_cannot_list(tmp_path):
    """A directory chain too deep for a path under tensors/ would silently lose the tensors in
    it: the import is refused instead."""
    src = os.fspath(tmp_path / "src")
    _torch_content_store(src)
    _deep_chain(os.path.join(src, "tensors"), 30)
    try:
        with pytest.raises(ImportSourceError, match="cannot list"):
            tensorcas.import_store(os.fspath(tmp_path / "dst"), src)
    finally:
        _remove_chain(os.path.join(src, "tensors"))
