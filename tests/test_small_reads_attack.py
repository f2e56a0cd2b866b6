"""The small-tensor read path under attack: damaged and hostile stores, readers beside writers and
gc, many threads on one reader, read patterns that defeat windows, names that are not plain
``str``.  Each test says what must hold: the right bytes or a clear ``StoreError``, never wrong
bytes, and reads that cost a bounded multiple of the bytes they return."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
import torch

import tensorcas
from tensorcas import format as fmt
from tensorcas.backends.local import LocalBackend
from tensorcas.blobs import windows
from tensorcas.errors import CorruptObjectError, InvalidNameError, StoreError, TensorNotFoundError
from tensorcas.format.dtypes import tables
from tensorcas.maintenance.gc import gc

ELEMS = 256  # float32: 1 KiB tensors


@pytest.fixture
def pack_reads(monkeypatch):
    """Counts reads of pack files through the local backend (their number, bytes and largest)."""
    count = {"n": 0, "bytes": 0, "largest": 0}
    original = LocalBackend.read_range
    lock = threading.Lock()

    def counting(self, key, offset, length):
        data = original(self, key, offset, length)
        if key.startswith("packs/"):
            with lock:
                count["n"] += 1
                count["bytes"] += len(data or b"")
                count["largest"] = max(count["largest"], len(data or b""))
        return data

    monkeypatch.setattr(LocalBackend, "read_range", counting)
    return count


def _value(i: int) -> torch.Tensor:
    return torch.arange(ELEMS, dtype=torch.float32) + i * 1000.0


def _write(root: str, n: int, writers: int = 1) -> dict[str, torch.Tensor]:
    """``n`` small tensors, taking turns between ``writers`` writers (one pack each)."""
    out = [tensorcas.ContentStoreWriter(root) for _ in range(writers)]
    tensors = {}
    try:
        for i in range(n):
            tensors[f"t{i:05d}"] = _value(i)
            out[i % writers].write_tensor(f"t{i:05d}", tensors[f"t{i:05d}"])
    finally:
        for writer in out:
            writer.close()
    return tensors


def _add_log(root: str, writer_id: str, lines: list[bytes]) -> None:
    with open(os.path.join(root, fmt.log_key(writer_id)), "wb") as f:
        f.write(fmt.encode_header(writer_id) + b"".join(lines))


def _blob_lines(log: str) -> list[fmt.PackedBlob]:
    with open(log, "rb") as f:
        return [fmt.PackedBlob.decode(line, log) for line in f.read().split(b"\n") if b'"op":"blob"' in line]


# -- read patterns ---------------------------------------------------------------------------


@pytest.mark.parametrize("writers", [8, 48])
def test_reads_taking_turns_between_packs_cost_about_the_bytes_they_use(tmp_path, pack_reads, writers):
    """Tensors written by many writers at once, read in the order written: each read moves to
    another pack.  A window dropped before its run used it must not be read again whole for
    every small blob (that cost 1 MiB per 1 KiB tensor, 250 times the bytes)."""
    root = str(tmp_path)
    tensors = _write(root, (50 if writers == 8 else 100) * writers, writers)  # packs of 50 or 100 KiB
    total = sum(t.nbytes for t in tensors.values())
    reader = tensorcas.ContentStoreReader(root)
    names = reader.list_tensors()
    assert len(glob.glob(f"{root}/packs/*.pack")) == writers
    pack_reads.update(n=0, bytes=0, largest=0)
    for name in names:
        assert torch.equal(reader.read_tensor(name), tensors[name])
    if writers == 8:  # fewer runs than windows kept: each pack read once, in a few windows
        assert pack_reads["bytes"] <= 2 * total, pack_reads
    else:  # more runs than windows: no read larger than a run's first window
        assert pack_reads["largest"] <= 64 << 10, pack_reads
        assert pack_reads["bytes"] <= len(names) * (64 << 10), pack_reads


def test_threads_reading_parts_of_one_pack_share_one_reader(tmp_path, pack_reads):
    """Threads each reading their own part of one pack in order, through one reader: every
    tensor right, and each part read in windows of its own (not one window fought over)."""
    root = str(tmp_path)
    tensors = _write(root, 2400)
    total = sum(t.nbytes for t in tensors.values())
    reader = tensorcas.ContentStoreReader(root)
    names = reader.list_tensors()
    parts = [names[i * 600 : (i + 1) * 600] for i in range(4)]
    wrong: list[str] = []
    start = threading.Barrier(len(parts))
    pack_reads.update(n=0, bytes=0, largest=0)

    def read(part: list[str]) -> None:
        start.wait()
        for name in part:
            if not torch.equal(reader.read_tensor(name), tensors[name]):
                wrong.append(name)

    threads = [threading.Thread(target=read, args=(part,)) for part in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert pack_reads["bytes"] <= 3 * total, pack_reads


def test_windows_of_a_long_read_stay_bounded(tmp_path):
    """Reading many small tensors keeps at most MAX_WINDOW_BYTES in windows, and remembers a
    bounded number of runs."""
    root = str(tmp_path)
    tensors = _write(root, 8000, 4)
    reader = tensorcas.ContentStoreReader(root)
    for name in reader.list_tensors():
        assert torch.equal(reader.read_tensor(name), tensors[name])
    pack_windows = reader.store.blobs._windows
    kept = pack_windows.windows
    assert len(kept) <= windows.MAX_WINDOWS
    assert sum(n for _, _, n in kept) <= windows.MAX_WINDOW_BYTES
    assert all(len(runs) <= windows.RUNS for runs in pack_windows._runs.values())


# -- damaged and hostile stores --------------------------------------------------------------


def _store_with_a_second_copy(root: str) -> tuple[dict[str, torch.Tensor], str]:
    """A store whose every blob has a second place, in a copy of its pack (sealed); the first
    place's pack is returned for the test to damage."""
    tensors = _write(root, 600)
    (pack,) = glob.glob(f"{root}/packs/*.pack")
    (log,) = glob.glob(f"{root}/logs/*.log")
    shutil.copy(pack, f"{root}/packs/zz-copy-1.pack")
    places = [fmt.PackedBlob(p.blob, p.nbytes, "zz-copy-1", p.offset).encode() for p in _blob_lines(log)]
    _add_log(root, "zz-copy", [*places, fmt.encode_seal("zz-copy-1")])
    return tensors, pack


@pytest.mark.parametrize("kwargs", [{}, {"verify": True}, {"cache": False}])
@pytest.mark.parametrize("damage", ["truncated", "missing", "truncated-mid-read"])
def test_a_damaged_first_copy_falls_back_to_the_second(tmp_path, kwargs, damage):
    root = str(tmp_path)
    tensors, pack = _store_with_a_second_copy(root)
    reader = tensorcas.ContentStoreReader(root, **kwargs)
    for i, (name, t) in enumerate(tensors.items()):
        if (damage == "truncated" and i == 0) or (damage == "truncated-mid-read" and i == 10):
            os.truncate(pack, os.path.getsize(pack) // 3)  # after a window was read, for the latter
        elif damage == "missing" and i == 0:
            os.remove(pack)
        assert torch.equal(reader.read_tensor(name), t), name


@pytest.mark.parametrize("kwargs", [{}, {"verify": True}])
def test_places_past_the_end_of_their_pack_are_damage_not_bytes(tmp_path, kwargs):
    root = str(tmp_path)
    tensors = _write(root, 600)
    (pack,) = glob.glob(f"{root}/packs/*.pack")
    size = os.path.getsize(pack)
    os.truncate(pack, size // 2)
    reader = tensorcas.ContentStoreReader(root, **kwargs)
    good = 0
    for name, t in tensors.items():
        try:
            got = reader.read_tensor(name)
        except CorruptObjectError as exc:
            assert name in str(exc) and "verify" in str(exc)
            continue
        assert torch.equal(got, t)
        good += 1
    assert 0 < good < len(tensors)


def test_a_lying_seal_on_a_pack_still_written_never_serves_wrong_bytes(tmp_path):
    """A log that says a pack is sealed while its writer still appends: windows read there hold
    only bytes already written, so readers get the right bytes as the writer goes on."""
    root = str(tmp_path)
    writer = tensorcas.ContentStoreWriter(root)
    wrong: list[str] = []
    try:
        writer.write_tensor("t00000", _value(0))
        writer.flush()
        (pack,) = glob.glob(f"{root}/packs/*.pack")
        _add_log(root, "zz-liar", [fmt.encode_seal(os.path.basename(pack)[: -len(".pack")])])
        for i in range(1, 1000):
            writer.write_tensor(f"t{i:05d}", _value(i))
            if i % 100 == 0:
                writer.flush()
                reader = tensorcas.ContentStoreReader(root)
                for name in reader.list_tensors():
                    if not torch.equal(reader.read_tensor(name), _value(int(name[1:]))):
                        wrong.append(name)
    finally:
        writer.close()
    assert wrong == []


# -- concurrency -----------------------------------------------------------------------------


def test_gc_rewriting_packs_under_windowed_readers(tmp_path):
    """gc (grace 0) copies the live blobs of mostly unused packs to a new pack and deletes the
    old ones while threads read every live tensor in order: right bytes or a StoreError."""
    root = str(tmp_path)
    tensors = _write(root, 3000, 2)
    keep = {name: t for i, (name, t) in enumerate(tensors.items()) if i % 3 == 0}
    tensorcas.rm(root, [name for name in tensors if name not in keep])
    then = time.time() - 7200
    for dirpath, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(dirpath, name), (then, then))
    wrong: list[str] = []
    reads = [0]
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            reader = tensorcas.ContentStoreReader(root)
            for name, t in keep.items():
                try:
                    got = reader.read_tensor(name)
                except StoreError:
                    continue
                reads[0] += 1
                if not torch.equal(got, t):
                    wrong.append(name)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        report = gc(root, grace_seconds=0)
    finally:
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join()
    assert report.removed_packs
    assert wrong == [] and reads[0] > len(keep)
    reader = tensorcas.ContentStoreReader(root)
    for name, t in keep.items():
        assert torch.equal(reader.read_tensor(name), t)


_WRITER = """
import sys, torch, tensorcas
with tensorcas.ContentStoreWriter(sys.argv[1]) as writer:
    for i in range(1, 2000):
        writer.write_tensor(f"t{i:05d}", torch.arange(256, dtype=torch.float32) + i * 1000.0)
        if i % 50 == 0:
            writer.flush()
"""


def test_readers_in_threads_beside_a_writer_in_another_process(tmp_path):
    """A writer process appends (packs sealed as it closes them) while threads here open readers
    and read every name they find: the right bytes every time."""
    root = str(tmp_path)
    _write(root, 1)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, root])
    wrong: list[str] = []
    reads = [0]

    def read() -> None:
        while True:
            done = writer.poll() is not None
            reader = tensorcas.ContentStoreReader(root)
            for name in reader.list_tensors():
                if not torch.equal(reader.read_tensor(name), _value(int(name[1:]))):
                    wrong.append(name)
                reads[0] += 1
            if done:
                return

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writer.wait() == 0
    assert wrong == [] and reads[0] >= 2 * 2000


def test_after_gc_moved_blobs_small_reads_go_to_the_copies_in_windows(tmp_path, pack_reads):
    """Once gc copied the live blobs of a pack to a new one and deleted the old, the logs still
    give the old place first: a reader asks for the missing pack once, not once per tensor, and
    reads the copies through windows."""
    root = str(tmp_path)
    tensors = _write(root, 1800)
    keep = {name: t for i, (name, t) in enumerate(tensors.items()) if i % 3 == 0}
    tensorcas.rm(root, [name for name in tensors if name not in keep])
    then = time.time() - 7200
    for dirpath, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(dirpath, name), (then, then))
    assert gc(root, grace_seconds=0).removed_packs
    reader = tensorcas.ContentStoreReader(root)
    pack_reads.update(n=0, bytes=0, largest=0)
    for name, t in keep.items():
        assert torch.equal(reader.read_tensor(name), t)
    assert pack_reads["n"] <= 10, pack_reads


# -- names -----------------------------------------------------------------------------------


class _EqualsEverything(str):
    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash("a/b")


def test_a_str_subclass_name_finds_only_the_tensor_of_its_characters(tmp_path):
    root = str(tmp_path)
    with tensorcas.ContentStoreWriter(root) as writer:
        writer.write_tensor("a/b", torch.arange(4.0))
    reader = tensorcas.ContentStoreReader(root)
    with pytest.raises(TensorNotFoundError, match="'zzz'"):
        reader.read_tensor(_EqualsEverything("zzz"))
    # The record of 'a/b' keeps its own name, whoever asked first.
    assert reader.read_tensor_metadata(_EqualsEverything("a/b")).name == "a/b"
    assert type(reader.read_tensor_metadata("a/b").name) is str
    assert torch.equal(reader.read_tensor(_EqualsEverything("a/b")), torch.arange(4.0))
    for bad in (b"a/b", 1, None, _EqualsEverything("../x")):
        with pytest.raises(InvalidNameError):
            reader.read_tensor(bad)  # type: ignore[arg-type]


# -- every dtype, every kind of view ---------------------------------------------------------


def _cases() -> list[tuple[str, str, torch.Tensor]]:
    out = []
    for name, dtype in tables()[0].items():
        base = torch.arange(64, dtype=torch.uint8).view(dtype)
        n = base.numel()
        cases = {"whole": base, "view": base[1 : n - 1 : 2], "empty": base[:0], "scalar": base[0:1].reshape(())}
        if dtype.is_floating_point or dtype.is_complex:
            cases["grad"] = base.clone().requires_grad_(True)
        out += [(name, kind, t) for kind, t in cases.items()]
    return out


def test_every_dtype_and_view_reads_as_the_general_path_does(tmp_path):
    root = str(tmp_path)
    cases = _cases()
    with tensorcas.ContentStoreWriter(root) as writer:
        for name, kind, t in cases:
            writer.write_tensor(f"{name}/{kind}", t)
    direct = tensorcas.ContentStoreReader(root)
    uncached = tensorcas.ContentStoreReader(root, cache=False)
    general = tensorcas.ContentStoreReader(root, verify=True)
    for name, kind, t in cases:
        for reader in (direct, uncached, general):
            got = reader.read_tensor(f"{name}/{kind}")
            assert (got.dtype, got.shape, got.stride(), got.storage_offset()) == (
                t.dtype, t.shape, t.stride(), t.storage_offset()
            ), (name, kind)
            assert got.requires_grad == t.requires_grad
            assert got.untyped_storage().nbytes() == t.untyped_storage().nbytes()
            assert bytes(got.detach().untyped_storage()) == bytes(t.detach().untyped_storage())
    # One storage per blob in the cache: the views of a dtype share the whole one's memory.
    whole, view = direct.read_tensor("float32/whole"), direct.read_tensor("float32/view")
    assert whole.untyped_storage().data_ptr() == view.untyped_storage().data_ptr()
    whole[1] = -1.0
    assert view[0] == -1.0


def test_a_record_whose_dtype_does_not_divide_its_blob(tmp_path):
    """A float32 view of a 6-byte blob (a hostile but bounded record): read as the general
    path reads it, over a storage of the blob's own size."""
    root = str(tmp_path)
    data = torch.tensor([1, 2, 3, 4, 5, 6], dtype=torch.int8)
    with tensorcas.ContentStoreWriter(root) as writer:
        writer.write_tensor("bytes", data)
    record = tensorcas.ContentStoreReader(root).read_tensor_metadata("bytes")
    odd = fmt.TensorRecord("odd", "float32", (1,), (1,), 0, False, record.blob, 6)
    _add_log(root, "zz-odd", [fmt.encode_put(odd, time.time_ns())])
    expected = data[:4].view(torch.float32)
    for kwargs in ({}, {"cache": False}, {"verify": True}):
        reader = tensorcas.ContentStoreReader(root, **kwargs)
        got = reader.read_tensor("odd")
        assert got.untyped_storage().nbytes() == 6 and torch.equal(got, expected)
        storage = reader.read_storage(record.blob)
        assert bytes(storage) == bytes(data.untyped_storage())
        if kwargs.get("cache", True):
            assert storage.data_ptr() == got.untyped_storage().data_ptr()


def _race(reader: tensorcas.ContentStoreReader, tensors: dict[str, torch.Tensor], threads: int) -> list[str]:
    """Names read wrong (or failing) by ``threads`` threads reading all of ``tensors`` at once,
    each from another place in the list."""
    names = list(tensors)
    start = threading.Barrier(threads)
    wrong: list[str] = []

    def read(first: int) -> None:
        start.wait()
        for name in names[first:] + names[:first]:
            try:
                if not torch.equal(reader.read_tensor(name), tensors[name]):
                    wrong.append(name)
            except StoreError as exc:
                wrong.append(f"{name}: {exc}")

    running = [threading.Thread(target=read, args=(i * len(names) // threads,)) for i in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join()
    return wrong


def test_threads_on_a_reader_just_opened(tmp_path):
    """Threads racing on a reader whose blob lines are not parsed yet (PackIndex.first and
    RecordLog.get answer without the lock once their answer is known)."""
    root = str(tmp_path)
    tensors = _write(root, 2000, 2)
    for _ in range(3):
        assert _race(tensorcas.ContentStoreReader(root), tensors, 8) == []
