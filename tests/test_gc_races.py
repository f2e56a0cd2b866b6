"""gc beside writers: the orderings that once lost acknowledged data, forced rather than hoped for.

gc moves each candidate aside, reads the logs again, then puts back what is used and deletes the
rest; a writer checks after appending its record that its blob is still there.  Each test below
puts a writer's record at one exact point of a gc (through hooks on the gc's own backend calls)
and checks that every write that returned reads back bit-exact, at grace 0 and 1, loose and packed.
Also here: blobs written with ``write_storage`` are roots that gc keeps, logs gc cannot read stop
it, and what a killed gc moved aside comes back.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest
import torch

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas import format as fmt
from tensorcas.backends.local import LocalBackend
from tensorcas.backends.memory import MemoryBackend
from tensorcas.hashing import OVERLAP_THRESHOLD
from tensorcas.maintenance.gc import DamagedStoreError
from tensorcas.store import PACK_THRESHOLD, Store

BIG = PACK_THRESHOLD // 4 + 1024  # float32 elements: a loose blob
SMALL = 16  # float32 elements: a packed blob
AHEAD = OVERLAP_THRESHOLD // 4 + 1024  # float32 elements: hashed ahead by ``write_tensors``


def _age_everything(root: str, seconds: float = 7200) -> None:
    then = time.time() - seconds
    for dirpath, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(dirpath, name), (then, then))


def _unreferenced_store(loc: str, tensor: torch.Tensor) -> None:
    """A store holding ``tensor``'s bytes that no name uses any more, untouched for two hours."""
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("old", tensor)
        writer.write_tensor("filler", torch.arange(4.0) + 100)  # keeps a log and a pack alive
    tensorcas.rm(loc, ["old"])
    _age_everything(loc)


class _Hooked(LocalBackend):
    """The gc's own backend, running ``hook`` at one point of its work (once)."""

    def __init__(self, root: str, when: str, hook: Callable[[], None]) -> None:
        super().__init__(root)
        self.when, self.hook, self.fired = when, hook, False

    def _fire(self, when: str) -> None:
        if self.when == when and not self.fired:
            self.fired = True
            self.hook()

    def quarantine(self, key: str, older_than: float) -> str | None:
        self._fire("before-move")  # records read once, nothing moved yet
        trash = super().quarantine(key, older_than)
        if trash is not None:
            self._fire("after-move")  # moved aside, logs not yet read again
        return trash

    def purge(self, trash: str) -> None:
        self._fire("before-purge")  # logs read again: a record from now on comes too late
        super().purge(trash)

    def restore(self, trash: str) -> None:
        self._fire("before-purge")
        super().restore(trash)


#: Where a writer that reuses the bytes gc is collecting does its work, relative to the gc:
#: - whole-write-before-move: check, record and check-after all between gc's first read of the
#:   records and its move (only gc's second read of the logs saves the blob);
#: - record-after-second-read: the writer finds the blob before the move, and appends its record
#:   only after gc's second read (only the writer's check after its record saves it);
#: - after-move, before-purge: the writer finds the blob gone and stores it again.
SCENARIOS = ["whole-write-before-move", "record-after-second-read", "after-move", "before-purge"]


#: What the racing write stores, and how: ``write_tensor``, or ``write_tensors`` (which confirms
#: every blob after its last record, and hashes large storages ahead on other threads).
WRITES = [("loose", "one"), ("packed", "one"), ("packed", "batch"), ("ahead", "batch")]


@pytest.mark.parametrize(("kind", "how"), WRITES)
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("grace", [0.0, 1.0])
def test_a_write_that_reuses_a_blob_gc_is_collecting_keeps_it(
    loc, kind, how, scenario, grace, monkeypatch
):
    tensor = torch.randn({"loose": BIG, "packed": SMALL, "ahead": AHEAD}[kind])
    _unreferenced_store(loc, tensor)
    if grace:
        # Make the bytes look stale even at a short grace: a writer's touch may be skipped (packs
        # are touched at most once a second) or carry a file time older than its own clock.
        monkeypatch.setattr(LocalBackend, "touch", lambda self, key: self.stat(key) is not None)
    writer = ContentStoreWriter(loc)
    writer.write_tensor("warmup", torch.arange(3.0))  # the writer has read the logs already
    written: list[bool] = []

    def write_now() -> None:
        # The same bytes: a reuse if still there.
        if how == "one":
            writer.write_tensor("again", tensor.clone())
        else:
            writer.write_tensors([("again", tensor.clone()), ("other", torch.arange(5.0))])
        written.append(True)

    if scenario == "record-after-second-read":
        checked, release = threading.Event(), threading.Event()
        found_stored = writer.store.blobs.find_stored  # where a writer finds bytes stored

        def check_then_wait(*args: object) -> tuple[bool, object]:
            result = found_stored(*args)  # type: ignore[arg-type]
            if not checked.is_set():  # the reuse; a later call is the writer storing it again
                assert result[0], "the writer should find the bytes stored"
                checked.set()
                assert release.wait(30)
            return result

        writer.store.blobs.find_stored = check_then_wait  # type: ignore[method-assign,assignment]
        thread = threading.Thread(target=write_now)
        thread.start()
        assert checked.wait(30)
        when, hook = "before-purge", lambda: (release.set(), thread.join(30))
    else:
        when, hook = scenario.replace("whole-write-", ""), write_now
    tensorcas.gc(Store.open(_Hooked(loc, when, hook)), grace_seconds=grace)
    writer.close()
    assert written == [True], "the writer never ran: the race was not exercised"
    reader = ContentStoreReader(loc, verify=True)
    assert torch.equal(reader.read_tensor("again"), tensor)
    assert tensorcas.verify(loc).ok
    # And a later gc, with nothing racing, keeps it too.
    tensorcas.gc(loc, grace_seconds=0)
    assert torch.equal(ContentStoreReader(loc, verify=True).read_tensor("again"), tensor)


def test_a_new_blob_published_just_before_gc_is_stored_again_when_collected(loc):
    """grace 0 may collect a blob published a moment ago, before its record: the writer's
    check after the record finds it gone and stores it again."""
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("filler", torch.arange(4.0))
    store = Store.open(loc)
    tensor = torch.randn(BIG)
    writer = ContentStoreWriter(loc)
    original_put = writer.store.blobs.put

    collected: list[str] = []

    def put_then_gc(digest, chunks, nbytes):
        original_put(digest, chunks, nbytes)
        if not collected:  # the first put only; the second is the writer storing it again
            time.sleep(0.01)  # past the file time's granularity, so that grace 0 takes it
            report = tensorcas.gc(store, grace_seconds=0)
            collected.extend(b.digest for b in report.removed_blobs)

    writer.store.blobs.put = put_then_gc  # type: ignore[method-assign]
    writer.write_tensor("fresh", tensor)
    writer.close()
    assert collected == [writer.store.get_record("fresh").blob]  # collected before its record
    assert torch.equal(ContentStoreReader(loc, verify=True).read_tensor("fresh"), tensor)


def test_concurrent_writers_and_gc_at_grace_zero_lose_nothing(loc):
    """Threads writing overlapping content while gc runs in a loop at grace 0."""
    tensors = {f"t{i}": torch.full((BIG if i % 2 else SMALL,), float(i % 5)) for i in range(40)}
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("seed", torch.zeros(2))
    stop = threading.Event()
    errors: list[BaseException] = []

    def collect() -> None:
        while not stop.is_set():
            try:
                tensorcas.gc(loc, grace_seconds=0)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    collector = threading.Thread(target=collect)
    collector.start()
    try:
        for round_ in range(3):
            with ContentStoreWriter(loc) as writer:
                for name, tensor in tensors.items():
                    writer.write_tensor(f"r{round_}/{name}", tensor)
            tensorcas.rm(loc, [f"r{round_}/"]) if round_ < 2 else None
    finally:
        stop.set()
        collector.join()
    assert errors == []
    reader = ContentStoreReader(loc, verify=True)
    for name, tensor in tensors.items():
        assert torch.equal(reader.read_tensor(f"r2/{name}"), tensor), name
    assert tensorcas.verify(loc).ok


# -- storage roots ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [SMALL, BIG])
def test_write_storage_makes_a_root_that_gc_keeps_until_removed(loc, size):
    data = torch.randn(size)
    with ContentStoreWriter(loc) as writer:
        digest = writer.write_storage(data.untyped_storage())
    _age_everything(loc)
    report = tensorcas.gc(loc, grace_seconds=0)
    assert report.removed_blobs == [] and report.removed_packs == []
    assert list(Store.open(loc).roots()) == [digest]
    reader = ContentStoreReader(loc, verify=True)
    assert torch.equal(torch.empty(0).set_(reader.read_storage(digest)), data)

    with ContentStoreWriter(loc) as writer:
        writer.remove_root(digest)
        with pytest.raises(tensorcas.BlobNotFoundError):
            writer.remove_root(digest)
    assert Store.open(loc).roots() == {}
    _age_everything(loc)
    tensorcas.gc(loc, grace_seconds=0)
    with pytest.raises(tensorcas.StoreError):
        ContentStoreReader(loc).read_storage(digest)


def test_a_root_written_again_after_removal_is_a_root_again(loc):
    data = torch.randn(BIG)
    with ContentStoreWriter(loc) as writer:
        digest = writer.write_storage(data.untyped_storage())
        writer.remove_root(digest)
        assert writer.write_storage(data.untyped_storage()) == digest
    _age_everything(loc)
    tensorcas.gc(loc, grace_seconds=0)
    assert list(Store.open(loc).roots()) == [digest]
    assert ContentStoreReader(loc, verify=True).read_storage(digest).nbytes() == data.nbytes


def test_an_alias_finds_the_bytes_under_a_foreign_digest(loc):
    data = torch.arange(10, dtype=torch.int64)
    sha1 = "0123456789abcdef0123456789abcdef01234567"
    with ContentStoreWriter(loc) as writer:
        digest = writer.write_storage(data.untyped_storage(), alias=sha1)
    store = Store.open(loc)
    assert store.resolve_alias("torch:" + sha1) == digest
    assert store.resolve_alias("torch:" + "f" * 40) is None
    with ContentStoreWriter(loc) as writer, pytest.raises(tensorcas.InvalidDigestError):
        writer.write_storage(data.untyped_storage(), alias="not hex!")


def test_roots_and_aliases_on_the_memory_backend():
    backend = MemoryBackend()
    data = torch.randn(SMALL)
    with ContentStoreWriter(backend) as writer:
        digest = writer.write_storage(data.untyped_storage(), alias="abc123")
    report = tensorcas.gc(backend, grace_seconds=0)
    assert report.removed_packs == []
    store = Store.open(backend)
    assert list(store.roots()) == [digest] and store.resolve_alias("torch:abc123") == digest


def test_root_lines_are_pinned(loc):
    line = fmt.encode_root(fmt.RootEntry("blake3:" + "a" * 64, 16, 5, ("torch:0f",)))
    assert line.endswith(
        b' {"op":"root","t":5,"blob":"blake3:'
        + b"a" * 64
        + b'","nbytes":16,"aliases":["torch:0f"]}\n'
    )
    assert fmt.decode_entry(line[:-1], "x") == fmt.RootEntry(
        "blake3:" + "a" * 64, 16, 5, ("torch:0f",)
    )
    unroot = fmt.encode_unroot("blake3:" + "a" * 64, 6)
    assert unroot.endswith(b' {"op":"unroot","t":6,"blob":"blake3:' + b"a" * 64 + b'"}\n')
    assert fmt.decode_entry(unroot[:-1], "x") == fmt.UnrootEntry("blake3:" + "a" * 64, 6)


# -- logs gc cannot read ------------------------------------------------------------------------


def _store_with_one_log(loc: str) -> tuple[str, str]:
    tensor = torch.randn(BIG)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("kept", tensor)
    log = os.path.join(loc, "logs", os.listdir(os.path.join(loc, "logs"))[0])
    _age_everything(loc)
    return log, tensorcas.ls(loc)[0].blob


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_log_gc_cannot_read_stops_gc_and_is_reported(loc, tmp_path, kind):
    log, digest = _store_with_one_log(loc)
    moved = os.fspath(tmp_path / "elsewhere.log")
    os.rename(log, moved)
    if kind == "symlink":
        os.symlink(moved, log)
    elif kind == "fifo":
        os.mkfifo(log)
    else:
        os.mkdir(log)
        os.rename(moved, os.path.join(log, "inner"))
    report = tensorcas.verify(loc)
    assert not report.ok and any(os.path.basename(log) in f.message for f in report.findings), (
        report
    )
    with pytest.raises(DamagedStoreError, match="verify"):
        tensorcas.gc(loc, grace_seconds=0)
    assert os.path.exists(os.path.join(loc, *fmt.blob_key(digest).split("/")))


# -- a gc killed after moving a blob aside --------------------------------------------------------


@pytest.mark.parametrize("kind", ["loose", "packed"])
def test_what_a_killed_gc_moved_aside_comes_back_at_the_next_gc(loc, kind):
    tensor = torch.randn(BIG if kind == "loose" else SMALL)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", tensor)
    store = Store.open(loc)
    record = store.get_record("x")
    key = fmt.blob_key(record.blob) if kind == "loose" else next(iter(store.blobs.reachable_blobs().packs))
    trash = store.backend.quarantine(key, time.time() + 60)  # and then the gc was killed
    assert trash is not None and not store.backend.exists(key)
    report = tensorcas.gc(loc)  # default grace: the moved-aside file is recent, restored anyway
    assert report.restored_trash == [trash]
    assert torch.equal(ContentStoreReader(loc, verify=True).read_tensor("x"), tensor)


def test_gc_never_makes_a_planted_trash_symlink_visible(loc, tmp_path):
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.randn(BIG))
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")
    blobs = os.path.join(loc, "blobs", "ab")
    os.makedirs(blobs, exist_ok=True)
    planted = os.path.join(blobs, ".gc-" + "c" * 62 + ".12345678")
    os.symlink(outside, planted)
    tensorcas.gc(loc, grace_seconds=0)
    assert os.listdir(blobs) == [] and outside.read_bytes() == b"secret"


def test_read_storage_by_a_foreign_digest(loc):
    data = torch.arange(10, dtype=torch.int64)
    sha1 = "0123456789abcdef0123456789abcdef01234567"
    with ContentStoreWriter(loc) as writer:
        writer.write_storage(data.untyped_storage(), alias=sha1)
    reader = ContentStoreReader(loc)
    for form in (sha1, "torch:" + sha1):
        got = torch.empty(0, dtype=torch.int64).set_(reader.read_storage(form))
        assert torch.equal(got, data)
    with pytest.raises(tensorcas.BlobNotFoundError, match="foreign digests"):
        reader.read_storage("f" * 40)


def test_cli_lists_and_removes_roots(loc):
    from click.testing import CliRunner

    from tensorcas.cli import cli

    with ContentStoreWriter(loc) as writer:
        digest = writer.write_storage(torch.randn(BIG).untyped_storage(), alias="abc")
    runner = CliRunner()
    listed = runner.invoke(cli, ["ls", loc, "--roots"])
    assert listed.exit_code == 0 and digest in listed.output and "torch:abc" in listed.output
    usage = runner.invoke(cli, ["du", loc])
    assert "storage roots" in usage.output and "1 blob kept without a name" in usage.output
    assert runner.invoke(cli, ["rm", loc]).exit_code == 2
    removed = runner.invoke(cli, ["rm", loc, "--root", digest])
    assert removed.exit_code == 0 and f"removed root {digest}" in removed.output
    assert runner.invoke(cli, ["rm", loc, "--root", digest]).exit_code == 2
    _age_everything(loc)
    assert [b.digest for b in tensorcas.gc(loc).removed_blobs] == [digest]


def test_du_counts_a_symlinked_blob_as_unreadable_and_gc_stops(loc, tmp_path):
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.randn(BIG))
    digest = tensorcas.ls(loc)[0].blob
    other = "blake3:" + "0" * 64
    outside = tmp_path / "outside"
    outside.write_bytes(b"junk")
    path = os.path.join(loc, *fmt.blob_key(other).split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(outside, path)
    assert tensorcas.du(loc).unreadable == 1
    assert not tensorcas.verify(loc).ok
    with pytest.raises(tensorcas.StoreError, match="not a regular file"):
        tensorcas.gc(loc, grace_seconds=0)
    assert outside.read_bytes() == b"junk"
    assert ContentStoreReader(loc, verify=True).read_tensor("x").numel() == BIG and digest
