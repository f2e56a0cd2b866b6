"""The conformance suite for backends, shipped so that anyone can check a backend of their own.

Subclass :class:`BackendTests` in a pytest module and supply a ``backend`` fixture that returns a
fresh, empty, writable backend; every test then runs against it::

    from tensorcas.testing import BackendTests

    class TestMyBackend(BackendTests):
        @pytest.fixture
        def backend(self, tmp_path):
            return MyBackend(tmp_path)

The core contract (``tensorcas.backends.base.Backend``) is tested for every backend; each optional
ability (``Appending``, ``Grace``, ``Staging``, ``LocalPaths``) only for backends that have it.
:meth:`BackendTests.test_holds_a_store` runs the writer, the reader, ``verify`` and ``gc`` over the
backend, and :meth:`BackendTests.test_read_only` the read-only wrapper.

By default the tests look at what a backend stored through the backend itself.  Override
:meth:`BackendTests.raw_get` and :meth:`BackendTests.raw_put` to read and plant objects another way
(the files on disk, the bucket through its own client), so that a backend is not only checked
against itself.  Needs pytest (``pip install tensorcas[test]``).
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from .backends.base import (
    Backend,
    Leftover,
    ObjectInfo,
    appending,
    grace,
    local_paths,
    staging,
)
from .backends.readonly import read_only
from .errors import ReadOnlyStoreError, StoreError

KEY = "blobs/ab/cdef"
DATA = bytes(range(256)) * 3

__all__ = [
    "DATA",
    "KEY",
    "AppendingTests",
    "BackendTests",
    "CoreTests",
    "GraceTests",
    "LocalPathsTests",
    "StagingTests",
    "StoreTests",
]


class _Hooks:
    """The fixture every test class needs, and the raw hooks."""

    @pytest.fixture
    def backend(self) -> Backend:  # pragma: no cover - always overridden
        raise NotImplementedError("a backend's test class supplies this fixture")

    def raw_get(self, backend: Backend, key: str) -> bytes | None:
        """The object under ``key`` as stored, or ``None``; override to look without the backend."""
        return backend.get(key)

    def raw_put(self, backend: Backend, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (replacing it); override to plant it without the backend."""
        backend.put_if_absent(key, data, overwrite=True)

    def _no_leftovers(self, backend: Backend) -> None:
        s = staging(backend)
        assert s is None or list(s.temporaries()) == []



class CoreTests(_Hooks):
    """The core contract, which every backend implements."""

    # -- absent keys ----------------------------------------------------------------------------

    def test_absent_key(self, backend: Backend) -> None:
        assert backend.get(KEY) is None
        assert backend.read_range(KEY, 0, 10) is None
        assert backend.read_into(KEY, memoryview(bytearray(4))) is None
        assert backend.stat(KEY) is None
        assert not backend.exists(KEY)
        assert backend.delete(KEY) is False
        assert list(backend.list("blobs")) == []
        assert list(backend.list("")) == []

    # -- the core: reads --------------------------------------------------------------------------

    def test_get_stat_exists(self, backend: Backend) -> None:
        before = time.time()
        self.raw_put(backend, KEY, DATA)
        assert backend.get(KEY) == DATA
        assert backend.exists(KEY)
        info = backend.stat(KEY)
        assert isinstance(info, ObjectInfo)
        assert info.size == len(DATA)
        assert before - 5 <= info.mtime <= time.time() + 5

    def test_read_range(self, backend: Backend) -> None:
        self.raw_put(backend, KEY, DATA)
        assert backend.read_range(KEY, 0, 10) == DATA[:10]
        assert backend.read_range(KEY, 100, 50) == DATA[100:150]
        assert backend.read_range(KEY, len(DATA) - 5, 100) == DATA[-5:]  # fewer at the end
        assert backend.read_range(KEY, len(DATA), 10) == b""
        assert backend.read_range(KEY, len(DATA) + 100, 10) == b""
        assert backend.read_range(KEY, 7, 0) == b""

    def test_read_into(self, backend: Backend) -> None:
        self.raw_put(backend, KEY, DATA)
        exact = bytearray(len(DATA))
        assert backend.read_into(KEY, memoryview(exact)) == len(DATA)
        assert bytes(exact) == DATA
        short = bytearray(10)
        assert backend.read_into(KEY, memoryview(short)) == 10
        assert bytes(short) == DATA[:10]
        long = bytearray(len(DATA) + 7)
        assert backend.read_into(KEY, memoryview(long)) == len(DATA)  # what there was
        assert bytes(long[: len(DATA)]) == DATA

    def test_empty_and_large_objects(self, backend: Backend) -> None:
        assert backend.put_if_absent("blobs/00/empty", b"") is True
        assert self.raw_get(backend, "blobs/00/empty") == b""
        info = backend.stat("blobs/00/empty")
        assert info is not None and info.size == 0
        assert backend.read_into("blobs/00/empty", memoryview(bytearray(0))) == 0
        big = bytes(range(251)) * (3 << 12)  # ~3 MB, not a multiple of any power of two
        assert backend.put_if_absent("blobs/11/big", memoryview(big)) is True
        out = bytearray(len(big))
        assert backend.read_into("blobs/11/big", memoryview(out)) == len(big)
        assert out == big
        assert backend.read_range("blobs/11/big", 1 << 20, 5) == big[1 << 20 : (1 << 20) + 5]
        assert self.raw_get(backend, "blobs/11/big") == big

    # -- the core: writes -------------------------------------------------------------------------

    def test_put_if_absent_never_overwrites(self, backend: Backend) -> None:
        assert backend.put_if_absent(KEY, b"first") is True
        assert backend.put_if_absent(KEY, b"second, longer") is False
        assert self.raw_get(backend, KEY) == b"first"
        info = backend.stat(KEY)
        assert info is not None and info.size == 5

    def test_put_if_absent_overwrite_heals(self, backend: Backend) -> None:
        self.raw_put(backend, KEY, b"damaged")
        assert backend.put_if_absent(KEY, b"healthy bytes", overwrite=True) is True
        assert self.raw_get(backend, KEY) == b"healthy bytes"

    def test_put_if_absent_accepts_buffers_and_pieces(self, backend: Backend) -> None:
        assert backend.put_if_absent("blobs/aa/x", memoryview(bytearray(b"abc"))) is True
        assert backend.put_if_absent("blobs/aa/y", bytearray(b"def")) is True
        pieces = (memoryview(DATA)[i : i + 100] for i in range(0, len(DATA), 100))
        assert backend.put_if_absent("blobs/aa/z", pieces) is True  # streamed, in order
        assert self.raw_get(backend, "blobs/aa/x") == b"abc"
        assert self.raw_get(backend, "blobs/aa/y") == b"def"
        assert self.raw_get(backend, "blobs/aa/z") == DATA

    def test_concurrent_put_if_absent_has_one_winner(self, backend: Backend) -> None:
        results: list[tuple[bool, bytes]] = []
        barrier = threading.Barrier(8)

        def put(i: int) -> None:
            data = bytes([i]) * 4096
            barrier.wait()
            results.append((backend.put_if_absent(KEY, data), data))

        threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [data for ok, data in results if ok]
        assert len(winners) == 1
        assert self.raw_get(backend, KEY) == winners[0]

    def test_delete(self, backend: Backend) -> None:
        self.raw_put(backend, KEY, DATA)
        assert backend.delete(KEY) is True
        assert self.raw_get(backend, KEY) is None and not backend.exists(KEY)
        assert backend.delete(KEY) is False
        assert backend.put_if_absent(KEY, b"again") is True  # the key is free again
        assert self.raw_get(backend, KEY) == b"again"

    def test_list_is_recursive(self, backend: Backend) -> None:
        keys = {"blobs/ab/1", "blobs/ab/2", "blobs/cd/3", "logs/w.log", "blobsx/ab/4", "top.json"}
        for key in keys:
            self.raw_put(backend, key, key.encode())
        assert set(backend.list("blobs")) == {"blobs/ab/1", "blobs/ab/2", "blobs/cd/3"}
        assert set(backend.list("blobs/")) == {"blobs/ab/1", "blobs/ab/2", "blobs/cd/3"}
        assert set(backend.list("blobs/ab")) == {"blobs/ab/1", "blobs/ab/2"}
        assert set(backend.list("logs")) == {"logs/w.log"}
        assert set(backend.list("")) == keys
        assert list(backend.list("nothing")) == []



class StoreTests(_Hooks):
    """Read-only access and a whole store, on every backend."""

    def test_read_only(self, backend: Backend) -> None:
        self.raw_put(backend, KEY, DATA)
        view = read_only(backend)
        assert view.get(KEY) == DATA and view.stat(KEY) == backend.stat(KEY)
        assert view.read_range(KEY, 3, 4) == DATA[3:7]
        assert set(view.list("blobs")) == {KEY}
        for write in (
            lambda: view.put_if_absent("blobs/ab/new", b"x"),
            lambda: view.put_if_absent(KEY, b"x", overwrite=True),
            lambda: view.delete(KEY),
        ):
            with pytest.raises(ReadOnlyStoreError):
                write()
        for kind in (appending, grace, staging):
            assert kind(view) is None  # no ability that writes is passed through
        assert (local_paths(view) is None) == (local_paths(backend) is None)
        assert self.raw_get(backend, KEY) == DATA
        assert self.raw_get(backend, "blobs/ab/new") is None

    # -- a whole store on the backend -----------------------------------------------------------

    def test_holds_a_store(self, backend: Backend) -> None:
        """The writer, the reader, ``verify`` and ``gc`` work on the backend, whatever abilities
        it has: small and large tensors, views of one storage, a deleted name collected."""
        from . import ContentStoreReader, ContentStoreWriter, gc, verify

        base = torch.arange(40_000, dtype=torch.float32)  # large enough for an object of its own
        tensors = {"w": base, "w_t": base.view(200, 200).t(), "b": torch.ones(3), "gone": torch.zeros(70_000)}
        with ContentStoreWriter(backend) as writer:
            for name, tensor in tensors.items():
                writer.write_tensor(name, tensor)
            writer.write_tensor("b_again", torch.ones(3))  # stored once
            writer.delete_tensor("gone")
        reader = ContentStoreReader(backend)
        assert reader.list_tensors() == ["w", "w_t", "b", "b_again"]
        got = {name: reader.read_tensor(name) for name in ("w", "w_t", "b")}
        for name, tensor in got.items():
            assert torch.equal(tensor, tensors[name]) and tensor.stride() == tensors[name].stride()
        assert got["w"].untyped_storage().data_ptr() == got["w_t"].untyped_storage().data_ptr()
        assert verify(backend).ok
        report = gc(backend, grace_seconds=0)
        assert len(report.removed_blobs) == 1  # the deleted tensor's blob
        assert verify(backend).ok
        assert torch.equal(ContentStoreReader(backend).read_tensor("w_t"), tensors["w_t"])



class AppendingTests(_Hooks):
    """The ``Appending`` ability (skipped for backends without it)."""

    def test_open_append(self, backend: Backend) -> None:
        can = appending(backend)
        if can is None:
            pytest.skip("the backend cannot append")
        appender = can.open_append("logs/w1.log")
        assert self.raw_get(backend, "logs/w1.log") == b""
        appender.append(b"line 1\n")
        assert self.raw_get(backend, "logs/w1.log") == b"line 1\n"  # visible at once
        appender.append(b"line 2\n")
        info = backend.stat("logs/w1.log")
        assert info is not None and info.size == 14
        assert backend.read_range("logs/w1.log", 7, 100) == b"line 2\n"
        assert set(backend.list("logs")) == {"logs/w1.log"}
        appender.close()
        appender.close()
        assert self.raw_get(backend, "logs/w1.log") == b"line 1\nline 2\n"

    def test_open_append_refuses_an_existing_key(self, backend: Backend) -> None:
        can = appending(backend)
        if can is None:
            pytest.skip("the backend cannot append")
        can.open_append("logs/w1.log").append(b"mine\n")
        with pytest.raises((OSError, StoreError)):  # which of the two is the backend's choice
            can.open_append("logs/w1.log")
        assert self.raw_get(backend, "logs/w1.log") == b"mine\n"

    def test_concurrent_appends_land_whole(self, backend: Backend) -> None:
        can = appending(backend)
        if can is None:
            pytest.skip("the backend cannot append")
        appenders = [can.open_append(f"logs/w{i}.log") for i in range(4)]

        def run(i: int) -> None:
            for j in range(200):
                appenders[i].append(f"{i}:{j}\n".encode())

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(4):
            data = self.raw_get(backend, f"logs/w{i}.log")
            assert data is not None and data.decode().splitlines() == [f"{i}:{j}" for j in range(200)]



class GraceTests(_Hooks):
    """The ``Grace`` ability (skipped for backends without it)."""

    def test_touch_refreshes_mtime(self, backend: Backend) -> None:
        g = grace(backend)
        if g is None:
            pytest.skip("the backend cannot mark objects in use")
        assert g.touch(KEY) is False
        self.raw_put(backend, KEY, DATA)
        first = backend.stat(KEY).mtime  # type: ignore[union-attr]
        time.sleep(0.05)
        assert g.touch(KEY) is True
        assert backend.stat(KEY).mtime > first  # type: ignore[union-attr]
        assert self.raw_get(backend, KEY) == DATA  # content untouched

    def test_delete_if_stale(self, backend: Backend) -> None:
        g = grace(backend)
        if g is None:
            pytest.skip("the backend cannot mark objects in use")
        assert g.delete_if_stale(KEY, time.time() + 100) is False
        self.raw_put(backend, KEY, DATA)
        mtime = backend.stat(KEY).mtime  # type: ignore[union-attr]
        assert g.delete_if_stale(KEY, older_than=mtime - 10) is False  # fresh: kept
        assert self.raw_get(backend, KEY) == DATA
        assert g.delete_if_stale(KEY, older_than=mtime + 10) is True  # stale: removed
        assert self.raw_get(backend, KEY) is None
        assert g.delete_if_stale(KEY, older_than=mtime + 10) is False
        self._no_leftovers(backend)

    def test_concurrent_touch_and_delete_if_stale(self, backend: Backend) -> None:
        """Whatever the interleaving: a touch that succeeded means the object is still there."""
        g = grace(backend)
        if g is None:
            pytest.skip("the backend cannot mark objects in use")
        for i in range(12):
            key = f"blobs/ab/race{i}"
            self.raw_put(backend, key, DATA)
            # Filesystem timestamps may be as coarse as a scheduler tick: keep the touch well after.
            cutoff = backend.stat(key).mtime + 0.01  # type: ignore[union-attr]
            time.sleep(0.03)
            touched: list[bool] = []
            t = threading.Thread(target=lambda k=key, out=touched: out.append(g.touch(k)))
            t.start()
            deleted = g.delete_if_stale(key, older_than=cutoff)
            t.join()
            if touched[0]:  # a successful touch means the object is kept
                assert not deleted
                assert self.raw_get(backend, key) == DATA
            if deleted:
                assert self.raw_get(backend, key) is None
        self._no_leftovers(backend)


    def test_quarantine_restore_purge(self, backend: Backend) -> None:
        g = grace(backend)
        if g is None:
            pytest.skip("the backend cannot mark objects in use")
        assert g.quarantine(KEY, time.time() + 100) is None  # absent
        self.raw_put(backend, KEY, DATA)
        mtime = backend.stat(KEY).mtime  # type: ignore[union-attr]
        assert g.quarantine(KEY, older_than=mtime - 10) is None  # fresh: stays
        assert self.raw_get(backend, KEY) == DATA
        trash = g.quarantine(KEY, older_than=mtime + 10)
        assert trash is not None
        assert self.raw_get(backend, KEY) is None and not backend.exists(KEY)  # absent to all
        assert KEY not in set(backend.list("blobs"))
        g.restore(trash)
        assert self.raw_get(backend, KEY) == DATA  # back, whole
        trash = g.quarantine(KEY, older_than=mtime + 10)
        assert trash is not None
        g.purge(trash)
        g.purge(trash)  # twice is fine
        assert self.raw_get(backend, KEY) is None
        self._no_leftovers(backend)

    def test_restore_keeps_an_object_written_again(self, backend: Backend) -> None:
        g = grace(backend)
        if g is None:
            pytest.skip("the backend cannot mark objects in use")
        self.raw_put(backend, KEY, DATA)
        trash = g.quarantine(KEY, older_than=time.time() + 10)
        assert trash is not None
        assert backend.put_if_absent(KEY, DATA) is True  # a writer stored the bytes again
        g.restore(trash)
        assert self.raw_get(backend, KEY) == DATA
        self._no_leftovers(backend)


class StagingTests(_Hooks):
    """The ``Staging`` ability (skipped for backends without it)."""

    def test_staged_is_invisible_until_published(self, backend: Backend) -> None:
        s = staging(backend)
        if s is None:
            pytest.skip("the backend cannot stage")
        staged = s.stage("blobs/ab")
        staged.write(b"hello ")
        staged.write(memoryview(b"world"))
        assert self.raw_get(backend, KEY) is None
        assert list(backend.list("blobs")) == []
        assert len(list(s.temporaries())) == 1
        assert staged.publish(KEY) is True
        assert self.raw_get(backend, KEY) == b"hello world"
        assert list(backend.list("blobs")) == [KEY]
        staged.abort()  # after publish: harmless, keeps the published object
        staged.abort()
        assert self.raw_get(backend, KEY) == b"hello world"
        self._no_leftovers(backend)

    def test_publish_never_overwrites(self, backend: Backend) -> None:
        s = staging(backend)
        if s is None:
            pytest.skip("the backend cannot stage")
        self.raw_put(backend, KEY, b"original")
        with s.stage("blobs/ab") as staged:
            staged.write(b"intruder")
            assert staged.publish(KEY) is False
        assert self.raw_get(backend, KEY) == b"original"
        self._no_leftovers(backend)

    def test_publish_into_a_subdirectory_of_the_staging_directory(self, backend: Backend) -> None:
        s = staging(backend)
        if s is None:
            pytest.skip("the backend cannot stage")
        # Streaming writes stage in 'blobs' before the digest (and so the fan-out) is known.
        with s.stage("blobs") as staged:
            staged.write(DATA)
            assert staged.publish(KEY) is True
        assert self.raw_get(backend, KEY) == DATA
        self._no_leftovers(backend)

    def test_abort_leaves_nothing(self, backend: Backend) -> None:
        s = staging(backend)
        if s is None:
            pytest.skip("the backend cannot stage")
        staged = s.stage("blobs/ab")
        staged.write(DATA)
        staged.abort()
        staged.abort()  # twice is fine
        assert self.raw_get(backend, KEY) is None
        assert list(backend.list("blobs")) == []
        with pytest.raises(RuntimeError), s.stage("blobs/ab") as staged:
            staged.write(DATA)
            raise RuntimeError("interrupted")
        assert list(backend.list("blobs")) == []
        self._no_leftovers(backend)

    def test_temporaries_listed_and_deletable(self, backend: Backend) -> None:
        s = staging(backend)
        if s is None:
            pytest.skip("the backend cannot stage")
        staged = s.stage("blobs/ab")
        staged.write(b"partial")
        temps = list(s.temporaries())
        assert len(temps) == 1
        leftover = temps[0]
        assert isinstance(leftover, Leftover) and leftover.key.startswith("blobs/")
        assert isinstance(leftover.mtime, float) and abs(leftover.mtime - time.time()) < 60
        assert leftover.key not in set(backend.list("blobs"))
        assert s.delete_temporary(leftover.key) is True
        self._no_leftovers(backend)
        staged.abort()  # its file is gone already: still fine



class LocalPathsTests(_Hooks):
    """The ``LocalPaths`` ability (skipped for backends without it)."""

    def test_local_path_holds_the_object(self, backend: Backend) -> None:
        paths = local_paths(backend)
        if paths is None:
            pytest.skip("the backend has no local paths")
        self.raw_put(backend, KEY, DATA)
        path = paths.local_path(KEY)
        assert path is not None
        with open(path, "rb") as f:
            assert f.read() == DATA


class BackendTests(CoreTests, StoreTests, AppendingTests, GraceTests, StagingTests, LocalPathsTests):
    """Every test of the suite: subclass it and supply the ``backend`` fixture."""
