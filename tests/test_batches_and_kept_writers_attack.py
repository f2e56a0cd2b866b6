"""Hostile callers of batched writes and of DCP's kept writers: batches whose blobs gc takes
between a record and its check, errors in the middle of a batch, prefix queries, writers kept between
saves that threads, evictions and forks reach at awkward moments."""

from __future__ import annotations

import errno
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import tensorcas
from storetools import log_files
from tensorcas import ContentStoreReader, ContentStoreWriter, StoreError
from tensorcas.backends import Backend, ObjectInfo
from tensorcas.backends.base import Data
from tensorcas.backends.local import LocalBackend
from tensorcas.dcp import opened
from tensorcas.store import PACK_THRESHOLD, Location, Store

BIG = PACK_THRESHOLD // 4 + 1024  # float32 elements: a loose blob
SMALL = 16  # float32 elements: a packed blob


def _age_everything(root: str, seconds: float = 7200) -> None:
    then = time.time() - seconds
    for dirpath, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(dirpath, name), (then, then))


def _unreferenced(loc: str, tensors: list[torch.Tensor]) -> None:
    """A store holding the bytes of ``tensors`` that no name uses any more, two hours old."""
    with ContentStoreWriter(loc) as writer:
        for i, tensor in enumerate(tensors):
            writer.write_tensor(f"old/{i}", tensor)
        writer.write_tensor("filler", torch.arange(4.0) + 100)
    tensorcas.rm(loc, ["old/"])
    _age_everything(loc)


# -- write_tensors: every appended record is confirmed, whatever fails ---------------------------


def test_a_failed_check_in_a_batch_still_confirms_the_records_after_it(loc, monkeypatch):
    """gc at grace 0 takes two blobs of a batch after they were found stored and before their
    records; storing the first again fails (disk full).  The error is raised, and the second
    record, appended too, must still have its blob: before, the checks stopped at the first
    failure and left it naming a blob that was gone."""
    x, y = torch.randn(BIG), torch.randn(BIG)
    _unreferenced(loc, [x, y])
    # Stale for gc although the writer finds them (a touch that leaves the file time old).
    monkeypatch.setattr(LocalBackend, "touch", lambda self, key: self.stat(key) is not None)
    writer = ContentStoreWriter(loc)
    writer.write_tensor("warmup", torch.arange(3.0))
    real_put, real_publish = writer._log.put, writer.store.backend.put_if_absent
    state = {"puts": 0, "full": False}

    def gc_then_put(record, packed=None):
        tensorcas.gc(loc, grace_seconds=0)  # the blob found stored is collected first
        real_put(record, packed)
        state["puts"] += 1
        state["full"] = state["puts"] == 2  # the batch's last record: the disk fills up

    def publish(key, chunks, *args, **kwargs):
        if state["full"]:
            state["full"] = False
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_publish(key, chunks, *args, **kwargs)

    writer._log.put = gc_then_put
    writer.store.backend.put_if_absent = publish
    with pytest.raises(OSError, match="No space"):
        writer.write_tensors([("a", x.clone()), ("b", y.clone())])
    assert state["puts"] == 2
    writer.close()
    # "a" was never acknowledged; "b" is in the store and must read back.
    assert torch.equal(ContentStoreReader(loc, verify=True).read_tensor("b"), y)


def test_a_batch_stopped_by_a_full_disk_keeps_the_blobs_of_the_records_it_appended(loc, monkeypatch):
    """gc at grace 0 takes the blobs of a batch's first two records (one packed: its pack
    rewritten without it; one loose) before each record; storing the third tensor's new bytes then
    fails (disk full).  The batch raises that error, and the two records it appended read back
    bit-exact: their blobs were stored again on the way out."""
    x, s, new = torch.randn(BIG), torch.randn(SMALL), torch.randn(BIG)
    _unreferenced(loc, [x, s])
    monkeypatch.setattr(LocalBackend, "touch", lambda self, key: self.stat(key) is not None)
    writer = ContentStoreWriter(loc)
    writer.write_tensor("warmup", torch.arange(3.0))
    real_put, real_publish = writer._log.put, writer.store.backend.put_if_absent
    collected: list[int] = []
    full = {"now": False}

    def gc_then_put(record, packed=None):
        report = tensorcas.gc(loc, grace_seconds=0)
        collected.append(len(report.removed_blobs) + len(report.removed_packs))
        real_put(record, packed)
        full["now"] = len(collected) == 2

    def publish(key, chunks, *args, **kwargs):
        if full["now"] and key.startswith("blobs/"):
            full["now"] = False
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_publish(key, chunks, *args, **kwargs)

    writer._log.put = gc_then_put
    writer.store.backend.put_if_absent = publish
    with pytest.raises(OSError, match="No space"):
        writer.write_tensors([("b", s.clone()), ("a", x.clone()), ("c", new)])
    writer.close()
    assert collected[0] >= 1 and collected[1] >= 1  # each record's blob was collected before it
    reader = ContentStoreReader(loc, verify=True)
    assert torch.equal(reader.read_tensor("a"), x) and torch.equal(reader.read_tensor("b"), s)
    assert "c" not in reader
    assert tensorcas.verify(loc).ok


# -- names under a prefix ------------------------------------------------------------------------


class _Natural(str):
    """A name that orders ``m2`` before ``m10`` (a natural sort, as a caller might use)."""

    def _key(self) -> list[object]:
        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str.__str__(self))]

    def __lt__(self, other: object) -> bool:
        return self._key() < _Natural(other)._key()  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        return self._key() > _Natural(other)._key()  # type: ignore[operator]

    def __le__(self, other: object) -> bool:
        return self._key() <= _Natural(other)._key()  # type: ignore[operator]

    def __ge__(self, other: object) -> bool:
        return self._key() >= _Natural(other)._key()  # type: ignore[operator]


def test_a_prefix_of_a_str_subclass_with_its_own_order_finds_every_name(loc):
    """The names under a prefix are found by a binary search over sorted names: a prefix whose
    class orders strings its own way must not steer it (before, 'm2/' found nothing)."""
    with ContentStoreWriter(loc) as writer:
        for i in range(12):
            writer.write_tensor(f"m{i}/w", torch.ones(1))
    reader = ContentStoreReader(loc)
    for i in range(12):
        for prefix in (f"m{i}/", f"m{i}"):
            assert reader.list_tensors(_Natural(prefix)) == [f"m{i}/w"], prefix
            assert reader.store.names(_Natural(prefix), refresh=False) == [f"m{i}/w"], prefix


# -- a writer inherited through fork -------------------------------------------------------------


class _CoreOnly(Backend):
    """A local directory seen through the six core operations alone (no append, no staging), as
    a backend of one's own or an object store is: logs are published whole, and a writer about
    to store a large blob creates its log beside the upload (``LogWriter.prepare``)."""

    def __init__(self, root: str) -> None:
        self._local = LocalBackend(root)
        self.location = self._local.location

    def get(self, key: str) -> bytes | None:
        return self._local.get(key)

    def read_range(self, key: str, offset: int, length: int) -> bytes | None:
        return self._local.read_range(key, offset, length)

    def stat(self, key: str) -> ObjectInfo | None:
        return self._local.stat(key)

    def put_if_absent(self, key: str, data: Data, *, overwrite: bool = False) -> bool:
        return self._local.put_if_absent(key, data, overwrite=overwrite)

    def delete(self, key: str) -> bool:
        return self._local.delete(key)

    def list(self, prefix: str) -> Iterator[str]:
        return iter(self._local.list(prefix))


def _in_child(run: Callable[[], None]) -> int:
    """Run ``run`` in a forked child; its exit code: 0 if it raised the fork error, 1 if it
    returned, 2 for any other error."""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            try:
                run()
                code = 1
            except StoreError as exc:
                code = 0 if "fork" in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _files(root: str, folder: str) -> list[str]:
    path = os.path.join(root, folder)
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("kind", ["local", "core-only"])
def test_a_refused_write_in_a_forked_child_stores_nothing(tmp_path, kind):
    """A child refuses to write with a writer it inherited, and the refusal comes first: it
    stores no blob and creates no log.  Before, the child stored the blob and only then refused,
    and where a writer creates its log beside a large upload (``LogWriter.prepare``, a backend
    without staging) the child created the parent's log under the parent's writer id: the
    parent's first entry that is not a put (a delete) then failed: its log existed already."""
    root = str(tmp_path / "store")
    loc: Location = root if kind == "local" else _CoreOnly(root)
    with ContentStoreWriter(loc) as other:
        other.write_tensor("old", torch.arange(3.0))
    blobs, logs = _files(root, "blobs"), log_files(root)
    writer = ContentStoreWriter(loc)  # nothing written yet: no log of its own
    big = torch.randn(1 << 20)

    def child() -> None:
        try:
            writer.write_tensor("child", big)
        finally:
            writer._log.prepare()  # what the write runs beside its upload, on another thread

    assert _in_child(child) == 0
    assert _in_child(lambda: writer.write_tensors([("child", big)])) == 0
    assert _files(root, "blobs") == blobs and log_files(root) == logs
    writer.delete_tensor("old")
    parent = torch.randn(BIG)
    writer.write_tensor("parent", parent)
    writer.close()
    reader = ContentStoreReader(loc)
    assert reader.list_tensors() == ["parent"] and torch.equal(reader.read_tensor("parent"), parent)
    assert tensorcas.verify(loc).ok


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_wait_for_its_parents_background_writes(loc):
    """Background writes still queued at the fork are the parent's: in the child, ``flush``
    refuses and ``close`` returns (before, both waited forever for a worker thread that a
    forked child does not have; an exit that closes the writer hung the same way)."""
    writer = ContentStoreWriter(loc, background=True)
    gate = threading.Event()
    place = writer._place.storage

    def held(*args: Any, **kwargs: Any) -> Any:
        assert gate.wait(30)
        return place(*args, **kwargs)

    writer._place.storage = held  # type: ignore[method-assign]
    tensors = [torch.randn(BIG) for _ in range(2)]
    for i, tensor in enumerate(tensors):
        writer.write_tensor(f"t{i}", tensor)  # queued; the worker waits at the first
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            try:
                writer.flush()
            except StoreError as exc:
                code = 0 if "fork" in str(exc) else 3
            writer.close()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    gate.set()
    writer.close()
    assert done[0] != 0, "the forked child hung closing its parent's background writer"
    assert os.waitstatus_to_exitcode(done[1]) == 0
    reader = ContentStoreReader(loc, verify=True)
    for i, tensor in enumerate(tensors):
        assert torch.equal(reader.read_tensor(f"t{i}"), tensor)


# -- writers kept between saves ------------------------------------------------------------------


def test_a_writer_being_closed_with_its_dropped_store_is_never_handed_to_a_save(loc, monkeypatch):
    """A save takes a kept writer (``take_writer``) just as another thread drops the kept
    stores (``forget``, or a fifth store pushing the oldest out).  Before, the dropping thread
    closed the idle writers outside the lock while the save could still pop them: the save got
    a closed writer ('this writer ... is closed')."""
    first = opened.take_writer(loc)
    first.write_tensor("before", torch.arange(3.0))
    opened.give_back(first)  # idle now, kept with its store
    has_kept, closing, taken = threading.Event(), threading.Event(), threading.Event()
    real_open, real_close = opened._open, opened._close_quietly

    def open_then_wait(*args: Any) -> Any:
        found = real_open(*args)
        has_kept.set()
        assert closing.wait(30)  # the other thread is closing the idle writers now
        return found

    def close_slowly(writer: ContentStoreWriter) -> None:
        real_close(writer)
        closing.set()
        taken.wait(2)  # a save may take a writer meanwhile

    monkeypatch.setattr(opened, "_open", open_then_wait)
    monkeypatch.setattr(opened, "_close_quietly", close_slowly)
    got: list[ContentStoreWriter] = []

    def take() -> None:
        try:
            got.append(opened.take_writer(loc))
        finally:
            taken.set()

    thread = threading.Thread(target=take)
    thread.start()
    assert has_kept.wait(30)
    opened.forget()
    thread.join(30)
    monkeypatch.undo()
    (writer,) = got
    try:
        writer.write_tensor("after", torch.arange(4.0))
    finally:
        writer.close()
        opened.forget()
    assert ContentStoreReader(loc).list_tensors() == ["before", "after"]


def test_a_writer_on_loan_when_its_store_is_pushed_out_is_closed_on_return(tmp_path):
    """While a save holds a kept writer, more stores than ``KEEP`` are opened and push its store
    out: given back, the writer is closed (its pack sealed, its log no longer open), and the next
    save on that store gets a new writer on a store opened afresh."""
    opened.forget()
    loc = str(tmp_path / "a")
    writer = opened.take_writer(loc)
    writer.write_tensor("small", torch.arange(3.0))  # packed: sealed only when closed
    for i in range(opened.KEEP):
        opened.give_back(opened.take_writer(str(tmp_path / f"other{i}")))
    opened.give_back(writer)
    with pytest.raises(StoreError, match="closed"):
        writer.write_tensor("late", torch.ones(1))
    store = Store.open(loc)
    store.refresh()
    assert writer._log._pack_id in store.blobs.packs.sealed
    again = opened.take_writer(loc)
    try:
        assert again is not writer and again.store is not writer.store
        again.write_tensor("next", torch.ones(2))
    finally:
        opened.forget()
    assert ContentStoreReader(loc).list_tensors() == ["small", "next"]
    assert tensorcas.verify(loc).ok
