"""Attacks on the hot paths: huge-page read targets, hashing while writing, background copies
hashed by the worker, and DCP saves that keep one writer per rank."""

from __future__ import annotations

import concurrent.futures.thread
import errno
import gc
import os
import pickle
import signal
import threading
import time
from multiprocessing.reduction import ForkingPickler

import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.multiprocessing

import tensorcas
import tensorcas._memory as memory
import tensorcas.dcp.storage as dcp_storage
from storetools import blob_files, log_files
from tensorcas import ContentStoreReader, ContentStoreWriter, hash_storage
from tensorcas.backends.local_files import LocalStaged, os_errors
from tensorcas.blobs.layer import PACK_THRESHOLD
from tensorcas.dcp import Writer, opened
from tensorcas.hashing import (
    MIN_OVERLAP_PIECE,
    OVERLAP_PIECE,
    OVERLAP_THRESHOLD,
    hash_while_writing,
    iter_storage_chunks,
)
from tensorcas.maintenance import list_checkpoints

MiB = 1 << 20

# Single-process DCP saves warn once each; the tests that expect it say so with pytest.warns.
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def _bytes(nbytes: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=g)


def _as_bytes(storage: torch.UntypedStorage) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8).set_(storage)


def _temporaries(root: str) -> list[str]:
    return [
        os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.startswith(".tmp-")
    ]


# -- 1. read targets with huge-page advice ------------------------------------------------------


@pytest.fixture(scope="module")
def large_store(tmp_path_factory) -> str:
    """A store with a storage of 4 MiB + 1 byte (advised) and a view of it."""
    loc = os.fspath(tmp_path_factory.mktemp("large") / "store")
    base = _bytes(4 * MiB + 1, seed=1)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("base", base)
        writer.write_tensor("view", base[3:].view(-1)[: 2 * MiB : 3])
    return loc


@pytest.mark.parametrize("madvise", ["linux", "absent", "refused"])
def test_read_targets_work_with_and_without_advice(large_store, monkeypatch, madvise):
    calls = []
    if madvise == "absent":  # not Linux, or no madvise in the C library
        monkeypatch.setattr(memory, "_madvise", None)
    elif madvise == "refused":  # a kernel without transparent huge pages: EINVAL
        monkeypatch.setattr(memory, "_madvise", lambda *args: calls.append(args) or -1)
    reader = ContentStoreReader(large_store, cache=False)
    base = reader.read_tensor("base")
    want = _bytes(4 * MiB + 1, seed=1)
    assert torch.equal(base, want)
    assert torch.equal(reader.read_tensor("view"), want[3:][: 2 * MiB : 3])
    mapped = ContentStoreReader(large_store, mmap=True, verify=True)  # no read target: a mapping
    assert torch.equal(mapped.read_tensor("base"), want)
    storage = reader.read_storage(hash_storage(want.untyped_storage()))
    assert torch.equal(_as_bytes(storage), want)
    if madvise == "refused":
        assert calls and all(addr % (2 * MiB) == 0 for addr, _, _ in calls)


def test_huge_page_span_stays_inside_the_storage():
    for start in (0, 4096, 2 * MiB - 4096, 2 * MiB, 2 * MiB + 64, 7 * MiB + 12345):
        for nbytes in (2 * MiB - 1, 2 * MiB, 4 * MiB + 1, 4 * MiB + 2 * MiB - 1, 9 * MiB + 7):
            span = memory.huge_page_span(start, nbytes)
            if span is None:
                continue
            first, length = span
            assert first % (2 * MiB) == 0 and first >= start
            assert length >= 2 * MiB and first + length <= start + nbytes


def test_advised_read_target_resizes_shares_and_pickles(large_store):
    """A read target is an ordinary storage: resizable, movable to shared memory, and sent
    through torch.multiprocessing's pickler by handle."""
    reader = ContentStoreReader(large_store, cache=False)
    want = _bytes(4 * MiB + 1, seed=1)
    grown = reader.read_tensor("base").untyped_storage()
    grown.resize_(6 * MiB)
    assert torch.equal(_as_bytes(grown)[: 4 * MiB + 1], want)
    shrunk = reader.read_tensor("base").untyped_storage()
    shrunk.resize_(MiB)
    assert torch.equal(_as_bytes(shrunk), want[:MiB])
    shared = reader.read_tensor("base").share_memory_()
    assert shared.is_shared() and torch.equal(shared, want)
    again = pickle.loads(ForkingPickler.dumps(shared))
    assert torch.equal(again, want)
    assert again.untyped_storage().data_ptr() != shared.untyped_storage().data_ptr() or again.is_shared()


# -- 2. hashing while writing ------------------------------------------------------------------

_SIZES = [
    0,
    1,
    PACK_THRESHOLD - 1,
    PACK_THRESHOLD,
    OVERLAP_THRESHOLD - 1,
    OVERLAP_THRESHOLD,
    OVERLAP_THRESHOLD + 1,
    4 * MiB - 1,
    4 * MiB,
    4 * MiB + 1,
    5 * MiB + 4099,
    16 * MiB + 3,
]


@pytest.mark.parametrize("nbytes", _SIZES)
def test_hash_while_writing_equals_hash_storage(nbytes):
    data = _bytes(nbytes, seed=nbytes)
    storage = data.untyped_storage()
    pieces: list[bytes] = []
    digest = hash_while_writing(iter_storage_chunks(storage), lambda p: pieces.append(bytes(p)), nbytes)
    assert digest == hash_storage(storage)
    assert b"".join(pieces) == data.numpy().tobytes()
    if nbytes >= OVERLAP_THRESHOLD:
        assert {len(p) for p in pieces[:-1]} <= {max(MIN_OVERLAP_PIECE, min(OVERLAP_PIECE, nbytes // 4))}
    # Pieces of a device-like source, cut where the piece size does not divide them.
    if nbytes:
        odd = list(iter_storage_chunks(storage, chunk_bytes=3 * MiB // 2 + 1))
        assert hash_while_writing(iter(odd), lambda p: None, nbytes) == digest


@pytest.mark.parametrize("nbytes", [OVERLAP_THRESHOLD - 1, OVERLAP_THRESHOLD, 4 * MiB + 1, 5 * MiB + 4099])
def test_streamed_blobs_are_named_by_their_digest(loc, nbytes):
    base = _bytes(nbytes, seed=7)
    view = base[1:].view(-1)[::3]  # non-contiguous: the whole storage is stored
    with ContentStoreWriter(loc) as writer:
        record = writer.write_tensor("view", view)
        root = writer.write_storage(_bytes(nbytes, seed=8).untyped_storage())
    assert record is not None and record.blob == hash_storage(base.untyped_storage())
    assert root == hash_storage(_bytes(nbytes, seed=8).untyped_storage())
    reader = ContentStoreReader(loc, verify=True)
    assert torch.equal(reader.read_tensor("view"), view)
    assert reader.read_storage(root).nbytes() == nbytes
    assert tensorcas.verify(loc).ok


def test_writer_threads_in_one_process(loc):
    """Four writers on four threads share the one hashing thread; every digest is right."""
    sizes = [OVERLAP_THRESHOLD, 2 * MiB + 17, 4 * MiB + 1, 3 * MiB - 5]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(sizes))

    def work(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            with ContentStoreWriter(loc) as writer:  # four threads make the new store at once
                for step in range(3):
                    t = _bytes(sizes[i], seed=100 * i + step)
                    record = writer.write_tensor(f"t{i}/{step}", t)
                    assert record is not None and record.blob == hash_storage(t.untyped_storage())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    reader = ContentStoreReader(loc, verify=True)
    for i, size in enumerate(sizes):
        for step in range(3):
            assert torch.equal(reader.read_tensor(f"t{i}/{step}"), _bytes(size, seed=100 * i + step))


def test_threads_make_one_new_store_at_once(tmp_path):
    """Ranks or threads that open a store that does not exist yet all create it: none is told
    that the directory another just made is "not a directory"."""
    for trial in range(20):
        loc = os.fspath(tmp_path / f"s{trial}" / "store")
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def open_it(loc: str, barrier: threading.Barrier, errors: list[BaseException]) -> None:
            barrier.wait(timeout=60)
            try:
                ContentStoreWriter(loc).close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_it, args=(loc, barrier, errors)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_hashes_while_writing(loc):
    """The child has neither the parent's hashing thread nor the BLAKE3 library's thread pool
    (which would wait forever for threads that do not exist in the child)."""
    parent = _bytes(2 * MiB, seed=3)
    hash_storage(parent.untyped_storage())  # the library's thread pool runs now
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("parent", parent)  # and the hashing thread
        writer.write_tensor("parent", parent)  # hashed first: probably stored
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if its write is right
        code = 1
        try:
            with ContentStoreWriter(loc) as writer:
                t = _bytes(2 * MiB + 5, seed=4)
                writer.write_tensor("child", t)
                record = writer.write_tensor("child", t)  # hashed first, on all cores in the parent
                code = 0 if record is not None and record.blob == hash_storage(t.untyped_storage()) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung while hashing")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert torch.equal(ContentStoreReader(loc, verify=True).read_tensor("child"), _bytes(2 * MiB + 5, seed=4))


def _disk_full_after(monkeypatch, limit: int) -> None:
    """Staged writes fail with ENOSPC once ``limit`` bytes of a temporary are written."""
    real = LocalStaged.write

    def write(self, data):
        if self._written >= limit:
            with os_errors("writing", self._tmp):
                raise OSError(errno.ENOSPC, "No space left on device")
        real(self, data)

    monkeypatch.setattr(LocalStaged, "write", write)


@pytest.mark.parametrize("background", [False, True])
def test_disk_full_while_hashing_leaves_no_temporary_and_no_record(loc, monkeypatch, background):
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("before", torch.ones(4))
    writer = ContentStoreWriter(loc, background=background)
    with monkeypatch.context() as patch:
        _disk_full_after(patch, MiB)
        t = _bytes(4 * MiB + 1, seed=5)
        if background:
            writer.write_tensor("x", t)
            with pytest.raises(tensorcas.StoreIOError, match="No space left"):
                writer.flush()
        else:
            with pytest.raises(tensorcas.StoreIOError, match="No space left"):
                writer.write_tensor("x", t)
    assert _temporaries(loc) == []
    reader = ContentStoreReader(loc)
    assert "x" not in reader and blob_files(loc) == []
    writer.write_tensor("x", t)  # the writer goes on once there is room
    writer.close()
    assert torch.equal(ContentStoreReader(loc, verify=True).read_tensor("x"), t)


def test_writes_during_interpreter_exit(loc, monkeypatch):
    """An atexit handler (or a writer's finalizer) may write after the interpreter has stopped
    thread pools from taking work: a storage of 1 MiB or more is then hashed on the calling
    thread instead of failing."""
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("warm", _bytes(2 * MiB, seed=9))  # the hashing thread exists
        monkeypatch.setattr(concurrent.futures.thread, "_shutdown", True)
        t = _bytes(OVERLAP_THRESHOLD, seed=10)
        record = writer.write_tensor("late", t)
        assert record is not None and record.blob == hash_storage(t.untyped_storage())
    monkeypatch.undo()
    assert torch.equal(ContentStoreReader(loc, verify=True).read_tensor("late"), t)


def test_verified_reads_during_interpreter_exit(loc, monkeypatch):
    """A verified read in an atexit handler hashes its pieces on the calling thread."""
    t = _bytes(2 * OVERLAP_THRESHOLD + 5, seed=14)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", t)
    assert torch.equal(ContentStoreReader(loc, verify=True).read_tensor("x"), t)  # thread exists
    monkeypatch.setattr(concurrent.futures.thread, "_shutdown", True)
    assert torch.equal(ContentStoreReader(loc, verify=True).read_tensor("x"), t)


# -- 3. background writes ----------------------------------------------------------------------


def test_background_mutation_after_return_never_changes_what_is_stored(loc):
    """New large storages (copied), probably stored ones (hashed first), small and mid-size
    ones, all changed right after each call."""
    big = _bytes(2 * MiB + 3, seed=11)
    mid = _bytes(PACK_THRESHOLD + 5, seed=12)
    small = _bytes(100, seed=13)
    want: dict[str, torch.Tensor] = {}
    with ContentStoreWriter(loc, background=True, max_pending_bytes=8 * MiB) as writer:
        for step in range(6):
            for name, t in (("big", big), ("mid", mid), ("small", small)):
                writer.write_tensor(f"{name}/{step}", t)
                want[f"{name}/{step}"] = t.clone()
                if step % 2:  # every other step leaves them unchanged: probably stored
                    t.add_(1)
            writer.write_tensor(f"bigview/{step}", big[5:].view(-1)[::7])
            want[f"bigview/{step}"] = big[5:].view(-1)[::7].clone()
            big.mul_(3)
    reader = ContentStoreReader(loc, verify=True)
    for name, t in want.items():
        assert torch.equal(reader.read_tensor(name), t), name


def test_background_last_write_of_a_name_wins(loc):
    """Small (written at once when idle), large new (copied), unchanged (record only) and
    over-limit (written now) writes of one name, in one order."""
    a = _bytes(2 * MiB, seed=14)
    seq = [a, _bytes(10, seed=1), a, _bytes(3 * MiB, seed=15), _bytes(200 * 1024, seed=16), a, _bytes(10, seed=2)]
    with ContentStoreWriter(loc, background=True, max_pending_bytes=5 * MiB // 2) as writer:
        for i in range(len(seq)):
            for j, t in enumerate(seq[: i + 1]):
                writer.write_tensor(f"n{i}", t)
                if j == i:
                    break
    reader = ContentStoreReader(loc)
    for i, t in enumerate(seq):
        assert torch.equal(reader.read_tensor(f"n{i}"), t), i


def test_threads_share_one_background_writer(loc):
    errors: list[BaseException] = []
    sizes = [100, PACK_THRESHOLD + 1, OVERLAP_THRESHOLD + 3, 3 * MiB]
    writer = ContentStoreWriter(loc, background=True, max_pending_bytes=6 * MiB)

    def work(i: int) -> None:
        try:
            for step in range(5):
                t = _bytes(sizes[(i + step) % len(sizes)], seed=1000 * i + step)
                writer.write_tensor(f"t{i}/{step}", t)
                writer.write_tensor(f"last{i}", t)
                t.zero_()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert not errors, errors
    reader = ContentStoreReader(loc, verify=True)
    for i in range(4):
        for step in range(5):
            want = _bytes(sizes[(i + step) % len(sizes)], seed=1000 * i + step)
            assert torch.equal(reader.read_tensor(f"t{i}/{step}"), want)
        assert torch.equal(reader.read_tensor(f"last{i}"), want)


def test_background_errors_surface_on_close_and_the_writer_stays_closed(loc, monkeypatch):
    writer = ContentStoreWriter(loc, background=True)
    writer.write_tensor("ok", torch.ones(3))
    writer.flush()
    _disk_full_after(monkeypatch, 0)
    writer.write_tensor("lost", _bytes(2 * MiB, seed=17))  # probably new: copied, fails later
    with pytest.raises(tensorcas.StoreIOError, match="No space left"):
        writer.close()
    monkeypatch.undo()
    for use in (
        lambda: writer.write_tensor("x", torch.ones(3)),
        lambda: writer.write_storage(torch.ones(3).untyped_storage()),
        lambda: writer.delete_tensor("ok"),
    ):
        with pytest.raises(tensorcas.StoreError, match="closed"):
            use()
    writer.close()  # a second close does nothing
    assert ContentStoreReader(loc).list_tensors() == ["ok"]
    assert _temporaries(loc) == []


def test_closing_a_background_writer_another_thread_is_using(tmp_path):
    """Writes racing a close on another thread fail as a closed writer's, never with the
    thread pool's own RuntimeError, and every write that returned is stored."""
    for trial in range(3):
        loc = os.fspath(tmp_path / f"s{trial}")
        writer = ContentStoreWriter(loc, background=True)
        writer.write_tensor("warm", torch.ones(3))
        written: list[str] = []
        failures: list[BaseException] = []

        def spam(writer: ContentStoreWriter, written: list[str], failures: list[BaseException]) -> None:
            for i in range(10_000):
                try:
                    writer.write_tensor(f"x{i}", torch.full((PACK_THRESHOLD // 4 + 1,), float(i)))
                except BaseException as exc:  # checked below
                    failures.append(exc)
                    return
                written.append(f"x{i}")

        thread = threading.Thread(target=spam, args=(writer, written, failures))
        thread.start()
        while len(written) < 3:
            time.sleep(0.001)
        writer.close()
        thread.join()
        assert len(failures) == 1 and isinstance(failures[0], tensorcas.StoreError), failures
        assert "closed" in str(failures[0])
        assert set(written) <= set(ContentStoreReader(loc).list_tensors())


@pytest.mark.parametrize("size", [100, 2 * MiB])
def test_a_write_that_began_before_close_is_refused_cleanly(loc, size):
    """The step a thread reaches when another closes the writer under it (after the open
    check): a StoreError that says so, and no new log or pack left open."""
    writer = ContentStoreWriter(loc)
    writer.write_tensor("a", torch.ones(3))
    writer.close()
    logs = log_files(loc)
    with pytest.raises(tensorcas.StoreError, match="was closed while this write ran"):
        writer._write_tensor("b", _bytes(size, seed=18))
    assert log_files(loc) == logs and _open_logs(loc) == []
    assert not [p for p in _fds() if p.startswith(os.path.abspath(loc))]
    assert ContentStoreReader(loc).list_tensors() == ["a"]


# -- 4. DCP: one writer per rank and save, kept for the process's next save ----------------------


def _sd(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(64, 1024, generator=g), "b": torch.ones(10)}


def _fds() -> set[str]:
    fd_dir = "/proc/self/fd"
    return {os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir) if _link(fd_dir, fd)}


def _link(fd_dir: str, fd: str) -> bool:
    try:
        os.readlink(os.path.join(fd_dir, fd))
    except OSError:
        return False
    return True


def _save(sd, writer, checkpoint_id=None):
    with pytest.warns(UserWarning, match="single process"):
        dcp.save(sd, storage_writer=writer, checkpoint_id=checkpoint_id, no_dist=True)


def _open_logs(loc: str) -> list[str]:
    logs = os.path.join(os.path.abspath(loc), "logs")
    return [p for p in _fds() if p.startswith(logs)]


def _no_writer_left_open(loc: str) -> bool:
    """Whether no log of the store is open once the writers kept between saves are closed."""
    opened.forget()
    return _open_logs(loc) == []


def test_one_writer_reused_for_many_saves_appends_to_one_log(loc):
    writer = Writer(loc, "a")
    _save(_sd(0), writer)
    assert len(log_files(loc)) == 1 and writer._writer is None and len(_open_logs(loc)) == 1
    for i in range(1, 4):
        _save(_sd(i), writer, checkpoint_id=f"c{i}")
        assert len(log_files(loc)) == 1 and writer._writer is None and len(_open_logs(loc)) == 1
    assert _no_writer_left_open(loc)
    for i in range(1, 4):
        assert torch.equal(tensorcas.load_state_dict(loc, f"c{i}")["w"], _sd(i)["w"])


def _failing(monkeypatch, where: str) -> None:
    if where == "write_data":
        real = dcp_storage._chunk_tensor
        calls = []

        def chunk(planner, item):
            calls.append(item)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(planner, item)

        monkeypatch.setattr(dcp_storage, "_chunk_tensor", chunk)
    else:

        def publish(writer, manifest):
            raise tensorcas.StoreIOError("appending failed: No space left on device")

        monkeypatch.setattr(dcp_storage.catalog, "publish_manifest", publish)


@pytest.mark.parametrize("where", ["write_data", "finish", "exists"])
def test_a_failed_save_leaves_nothing_open(loc, monkeypatch, where):
    writer = Writer(loc, "a")
    _save(_sd(0), writer)
    with monkeypatch.context() as patch:
        if where != "exists":
            _failing(patch, where)
        with pytest.raises(BaseException, match=r"No space|already exists"):
            dcp.save(_sd(1), storage_writer=writer, no_dist=True, checkpoint_id=None if where == "exists" else "b")
    # The failed save's writer is closed (a writer the first save gave back may stay open).
    assert writer._writer is None and len(_open_logs(loc)) <= 1
    # The same Writer saves again, under the failed name, and every save loads.
    _save(_sd(2), writer, checkpoint_id="b")
    assert torch.equal(tensorcas.load_state_dict(loc, "b")["w"], _sd(2)["w"])
    assert torch.equal(tensorcas.load_state_dict(loc, "a")["w"], _sd(0)["w"])
    assert writer._writer is None and _no_writer_left_open(loc)
    assert list_checkpoints(loc).incomplete == []


def test_a_writer_left_by_a_failed_save_is_not_reused(loc, monkeypatch):
    """A save with no checkpoint_id is not reset by DCP: the next save must not go on with the
    writer the failed one left (its sync decision and log belong to that save)."""
    writer = Writer(loc, "a")
    with monkeypatch.context() as patch:
        _failing(patch, "write_data")
        with pytest.raises(BaseException, match="No space"):
            dcp.save(_sd(1), storage_writer=writer, no_dist=True)
    assert writer._writer is None and _open_logs(loc) == []  # closed, not given back
    _save(_sd(1), writer)
    assert torch.equal(tensorcas.load_state_dict(loc, "a")["w"], _sd(1)["w"])
    assert writer._writer is None and _no_writer_left_open(loc)


def test_async_save_in_a_thread_reusing_one_writer(loc):
    writer = Writer(loc, "a")
    for i in range(3):
        with pytest.warns(UserWarning, match="single process"):
            dcp.async_save(_sd(i), storage_writer=writer, checkpoint_id=f"t{i}", no_dist=True).result()
        assert len(log_files(loc)) == 1 and writer._writer is None
    assert _no_writer_left_open(loc)
    assert torch.equal(tensorcas.load_state_dict(loc, "t2")["w"], _sd(2)["w"])


def test_a_writer_pickles_without_its_open_store(loc):
    writer = Writer(loc, "a", durable=True)
    writer._store_writer()
    try:
        copy = pickle.loads(pickle.dumps(writer))
    finally:
        writer._close_writer()
    assert copy._writer is None and copy.name == "a" and copy.durable
    _save(_sd(3), copy)
    assert torch.equal(tensorcas.load_state_dict(loc, "a")["w"], _sd(3)["w"])


@pytest.mark.parametrize("backend", ["local", "memory"])
def test_durable_saves_and_their_logs(loc, backend):
    """Durable saves on a local store (one ``syncfs``) keep their writer like any other; where
    each write is fsynced instead, the writer is one of its own, closed after each save."""
    store = loc if backend == "local" else tensorcas.backends.MemoryBackend()
    writer = Writer(store, "a", durable=True)
    _save(_sd(4), writer)
    _save(_sd(5), writer, checkpoint_id="b")
    logs = log_files(loc) if backend == "local" else [k for k in store.list("logs/")]
    assert len(logs) == (1 if backend == "local" else 2) and writer._writer is None
    assert torch.equal(tensorcas.load_state_dict(store, "b")["w"], _sd(5)["w"])
    gc.collect()
