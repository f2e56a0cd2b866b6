"""The optional abilities' tests, each skipped for a backend without the ability."""

from __future__ import annotations

import threading
import time

import pytest

from ..backends.base import Backend, Leftover, appending, copying, grace, local_paths, staging
from ..errors import StoreError
from .core import DATA, KEY, _Hooks


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



class CopyingTests(_Hooks):
    """The ``Copying`` ability (skipped for backends without it, or whose service declines to
    copy)."""

    def test_copy(self, backend: Backend) -> None:
        c = copying(backend)
        if c is None:
            pytest.skip("the backend cannot copy objects itself")
        backend.put_if_absent(KEY, DATA)
        copied = c.copy(KEY, "blobs/ab/copy", len(DATA), if_absent=True)
        if copied is None:
            pytest.skip("the backend's service declines to copy (the caller copies the bytes)")
        assert copied is True
        assert self.raw_get(backend, "blobs/ab/copy") == DATA
        assert self.raw_get(backend, KEY) == DATA
        self.raw_put(backend, "blobs/ab/other", b"other")
        assert c.copy(KEY, "blobs/ab/other", len(DATA), if_absent=True) is False
        assert self.raw_get(backend, "blobs/ab/other") == b"other"  # never replaced
        assert c.copy(KEY, "blobs/ab/fresh", len(DATA), if_absent=False) is True
        assert backend.get("blobs/ab/fresh") == DATA

    def test_copy_of_an_absent_object_is_declined(self, backend: Backend) -> None:
        c = copying(backend)
        if c is None:
            pytest.skip("the backend cannot copy objects itself")
        assert c.copy("blobs/ab/none", "blobs/ab/copy", 3, if_absent=False) is None
        assert self.raw_get(backend, "blobs/ab/copy") is None


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
