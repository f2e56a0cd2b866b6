"""The conformance suite every backend passes.

A backend's test module subclasses :class:`BackendConformance` and supplies only a ``backend``
fixture returning a fresh, empty, writable backend; every test here then runs against it.  The
tests check the contract written in ``tensorcas/backends/base.py`` and nothing an implementation
may choose freely (ordering of ``list``, the exception type for a misuse, mtime resolution).
"""

from __future__ import annotations

import threading
import time

import pytest

from tensorcas.backends.base import Backend, ObjectInfo
from tensorcas.errors import StoreError

KEY = "blobs/ab/cdef"
DATA = bytes(range(256)) * 3


class BackendConformance:
    """Mixin of contract tests; subclasses define the ``backend`` fixture."""

    @pytest.fixture
    def backend(self) -> Backend:  # pragma: no cover - always overridden
        raise NotImplementedError("a backend's test class supplies this fixture")

    # -- absent keys ---------------------------------------------------------------------------

    def test_absent_key(self, backend: Backend) -> None:
        assert backend.get(KEY) is None
        assert backend.read_range(KEY, 0, 10) is None
        assert backend.read_into(KEY, memoryview(bytearray(4))) is None
        assert backend.stat(KEY) is None
        assert not backend.exists(KEY)
        assert backend.touch(KEY) is False
        assert backend.delete(KEY) is False
        assert backend.delete_if_stale(KEY, time.time() + 100) is False
        assert list(backend.list("blobs")) == []
        assert list(backend.temporaries()) == []

    # -- reads ---------------------------------------------------------------------------------

    def test_get_stat_exists(self, backend: Backend) -> None:
        before = time.time()
        assert backend.put_if_absent(KEY, DATA) is True
        assert backend.get(KEY) == DATA
        assert backend.exists(KEY)
        info = backend.stat(KEY)
        assert isinstance(info, ObjectInfo)
        assert info.size == len(DATA)
        assert before - 5 <= info.mtime <= time.time() + 5

    def test_read_range(self, backend: Backend) -> None:
        backend.put_if_absent(KEY, DATA)
        assert backend.read_range(KEY, 0, 10) == DATA[:10]
        assert backend.read_range(KEY, 100, 50) == DATA[100:150]
        assert backend.read_range(KEY, len(DATA) - 5, 100) == DATA[-5:]  # fewer at the end
        assert backend.read_range(KEY, len(DATA), 10) == b""
        assert backend.read_range(KEY, len(DATA) + 100, 10) == b""
        assert backend.read_range(KEY, 7, 0) == b""

    def test_read_into(self, backend: Backend) -> None:
        backend.put_if_absent(KEY, DATA)
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
        assert backend.get("blobs/00/empty") == b""
        assert backend.stat("blobs/00/empty") == ObjectInfo(0, backend.stat("blobs/00/empty").mtime)
        assert backend.read_into("blobs/00/empty", memoryview(bytearray(0))) == 0
        big = bytes(range(251)) * (3 << 12)  # ~3 MB, not a multiple of any power of two
        assert backend.put_if_absent("blobs/11/big", memoryview(big)) is True
        out = bytearray(len(big))
        assert backend.read_into("blobs/11/big", memoryview(out)) == len(big)
        assert out == big
        assert backend.read_range("blobs/11/big", 1 << 20, 5) == big[1 << 20 : (1 << 20) + 5]

    # -- put_if_absent -------------------------------------------------------------------------

    def test_put_if_absent_never_overwrites(self, backend: Backend) -> None:
        assert backend.put_if_absent(KEY, b"first") is True
        assert backend.put_if_absent(KEY, b"second, longer") is False
        assert backend.get(KEY) == b"first"
        assert backend.stat(KEY).size == 5
        assert list(backend.temporaries()) == []

    def test_put_if_absent_overwrite_heals(self, backend: Backend) -> None:
        backend.put_if_absent(KEY, b"damaged")
        assert backend.put_if_absent(KEY, b"healthy bytes", overwrite=True) is True
        assert backend.get(KEY) == b"healthy bytes"

    def test_put_if_absent_accepts_buffers(self, backend: Backend) -> None:
        assert backend.put_if_absent("blobs/aa/x", memoryview(bytearray(b"abc"))) is True
        assert backend.put_if_absent("blobs/aa/y", bytearray(b"def")) is True  # type: ignore[arg-type]
        assert backend.get("blobs/aa/x") == b"abc" and backend.get("blobs/aa/y") == b"def"

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
        assert backend.get(KEY) == winners[0]
        assert list(backend.temporaries()) == []

    # -- staging -------------------------------------------------------------------------------

    def test_staged_is_invisible_until_published(self, backend: Backend) -> None:
        staged = backend.stage("blobs/ab")
        staged.write(b"hello ")
        staged.write(memoryview(b"world"))
        assert backend.get(KEY) is None
        assert list(backend.list("blobs")) == []
        assert len(list(backend.temporaries())) == 1
        assert staged.publish(KEY) is True
        assert backend.get(KEY) == b"hello world"
        assert list(backend.list("blobs")) == [KEY]
        staged.abort()  # after publish: harmless, keeps the published object
        staged.abort()
        assert backend.get(KEY) == b"hello world"
        assert list(backend.temporaries()) == []

    def test_publish_never_overwrites(self, backend: Backend) -> None:
        backend.put_if_absent(KEY, b"original")
        with backend.stage("blobs/ab") as staged:
            staged.write(b"intruder")
            assert staged.publish(KEY) is False
        assert backend.get(KEY) == b"original"
        assert list(backend.temporaries()) == []

    def test_publish_into_a_subdirectory_of_the_staging_directory(self, backend: Backend) -> None:
        # Streaming writes stage in 'blobs' before the digest (and so the fan-out) is known.
        with backend.stage("blobs") as staged:
            staged.write(DATA)
            assert staged.publish(KEY) is True
        assert backend.get(KEY) == DATA
        assert list(backend.temporaries()) == []

    def test_abort_leaves_nothing(self, backend: Backend) -> None:
        staged = backend.stage("blobs/ab")
        staged.write(DATA)
        staged.abort()
        staged.abort()  # twice is fine
        assert backend.get(KEY) is None
        assert list(backend.list("blobs")) == []
        assert list(backend.temporaries()) == []

    def test_context_manager_aborts_on_error(self, backend: Backend) -> None:
        with pytest.raises(RuntimeError), backend.stage("blobs/ab") as staged:
            staged.write(DATA)
            raise RuntimeError("interrupted")
        assert list(backend.list("blobs")) == []
        assert list(backend.temporaries()) == []

    def test_temporaries_listed_and_deletable(self, backend: Backend) -> None:
        staged = backend.stage("blobs/ab")
        staged.write(b"partial")
        temps = list(backend.temporaries())
        assert len(temps) == 1
        key, mtime = temps[0]
        assert key.startswith("blobs/")
        assert isinstance(mtime, float) and abs(mtime - time.time()) < 60
        assert key not in set(backend.list("blobs"))
        assert backend.delete_temporary(key) is True
        assert list(backend.temporaries()) == []
        staged.abort()  # its file is gone already: still fine

    # -- touch, delete, gc ---------------------------------------------------------------------

    def test_touch_refreshes_mtime(self, backend: Backend) -> None:
        backend.put_if_absent(KEY, DATA)
        first = backend.stat(KEY).mtime
        time.sleep(0.05)
        assert backend.touch(KEY) is True
        assert backend.stat(KEY).mtime > first
        assert backend.get(KEY) == DATA  # content untouched

    def test_delete(self, backend: Backend) -> None:
        backend.put_if_absent(KEY, DATA)
        assert backend.delete(KEY) is True
        assert backend.get(KEY) is None and not backend.exists(KEY)
        assert backend.delete(KEY) is False
        assert backend.put_if_absent(KEY, b"again") is True  # the key is free again
        assert backend.get(KEY) == b"again"

    def test_delete_if_stale(self, backend: Backend) -> None:
        backend.put_if_absent(KEY, DATA)
        mtime = backend.stat(KEY).mtime
        assert backend.delete_if_stale(KEY, older_than=mtime - 10) is False  # fresh: kept
        assert backend.get(KEY) == DATA
        assert backend.delete_if_stale(KEY, older_than=mtime + 10) is True  # stale: removed
        assert backend.get(KEY) is None
        assert backend.delete_if_stale(KEY, older_than=mtime + 10) is False
        assert list(backend.temporaries()) == []  # no trash left behind

    def test_touched_object_survives_gc(self, backend: Backend) -> None:
        backend.put_if_absent(KEY, DATA)
        written = backend.stat(KEY).mtime
        time.sleep(0.05)
        cutoff = written + 0.02  # gc started after the write but before the touch
        assert backend.touch(KEY) is True
        assert backend.delete_if_stale(KEY, older_than=cutoff) is False
        assert backend.get(KEY) == DATA
        assert list(backend.temporaries()) == []

    def test_concurrent_touch_and_gc(self, backend: Backend) -> None:
        """Whatever the interleaving: a touch that succeeded means the object is still there."""
        for i in range(12):
            key = f"blobs/ab/race{i}"
            backend.put_if_absent(key, DATA)
            # Filesystem timestamps may be as coarse as a scheduler tick: keep the touch well after.
            cutoff = backend.stat(key).mtime + 0.01
            time.sleep(0.03)
            touched: list[bool] = []
            t = threading.Thread(target=lambda k=key, out=touched: out.append(backend.touch(k)))
            t.start()
            deleted = backend.delete_if_stale(key, older_than=cutoff)
            t.join()
            if touched[0]:  # a successful touch means the object is kept
                assert not deleted
                assert backend.get(key) == DATA
            if deleted:
                assert backend.get(key) is None
        assert list(backend.temporaries()) == []

    # -- list ----------------------------------------------------------------------------------

    def test_list_is_recursive_and_excludes_temporaries(self, backend: Backend) -> None:
        keys = {"blobs/ab/1", "blobs/ab/2", "blobs/cd/3", "logs/w.log", "blobsx/ab/4"}
        for key in keys:
            backend.put_if_absent(key, key.encode())
        staged = backend.stage("blobs/ab")
        staged.write(b"tmp")
        assert set(backend.list("blobs")) == {"blobs/ab/1", "blobs/ab/2", "blobs/cd/3"}
        assert set(backend.list("blobs/")) == {"blobs/ab/1", "blobs/ab/2", "blobs/cd/3"}
        assert set(backend.list("blobs/ab")) == {"blobs/ab/1", "blobs/ab/2"}
        assert set(backend.list("logs")) == {"logs/w.log"}
        assert list(backend.list("nothing")) == []
        staged.abort()

    # -- append --------------------------------------------------------------------------------

    def test_open_append(self, backend: Backend) -> None:
        appender = backend.open_append("logs/w1.log")
        assert backend.get("logs/w1.log") == b""
        appender.append(b"line 1\n")
        assert backend.get("logs/w1.log") == b"line 1\n"  # visible at once
        appender.append(b"line 2\n")
        assert backend.stat("logs/w1.log").size == 14
        assert backend.read_range("logs/w1.log", 7, 100) == b"line 2\n"
        assert set(backend.list("logs")) == {"logs/w1.log"}
        appender.close()
        appender.close()
        assert backend.get("logs/w1.log") == b"line 1\nline 2\n"

    def test_open_append_refuses_an_existing_key(self, backend: Backend) -> None:
        backend.open_append("logs/w1.log").append(b"mine\n")
        with pytest.raises((OSError, StoreError)):  # which of the two is the backend's choice
            backend.open_append("logs/w1.log")
        assert backend.get("logs/w1.log") == b"mine\n"

    def test_concurrent_appends_land_whole(self, backend: Backend) -> None:
        appenders = [backend.open_append(f"logs/w{i}.log") for i in range(4)]

        def run(i: int) -> None:
            for j in range(200):
                appenders[i].append(f"{i}:{j}\n".encode())

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(4):
            lines = backend.get(f"logs/w{i}.log").decode().splitlines()
            assert lines == [f"{i}:{j}" for j in range(200)]
