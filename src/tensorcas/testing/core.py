"""The core contract's tests, the read-only wrapper's, and a whole store on the backend."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from ..backends.base import (
    Backend,
    ObjectInfo,
    appending,
    grace,
    local_paths,
    staging,
)
from ..backends.readonly import read_only
from ..errors import ReadOnlyStoreError

KEY = "blobs/ab/cdef"
DATA = bytes(range(256)) * 3



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

    def test_read_whole_asks_for_memory_only_for_the_size_expected(self, backend: Backend) -> None:
        self.raw_put(backend, KEY, DATA)
        asked: list[memoryview] = []
        adopted: list[memoryview] = []

        def allocate() -> memoryview:
            asked.append(memoryview(bytearray(len(DATA))))
            return asked[-1]

        assert backend.read_whole(KEY, len(DATA), allocate, adopt=adopted.append) == len(DATA)
        filled = [*asked, *adopted]
        assert len(filled) == 1 and bytes(filled[0]) == DATA
        if adopted:  # a buffer handed over is the caller's: writable, exactly the object
            assert not adopted[0].readonly and adopted[0].nbytes == len(DATA)
        asked.clear()
        adopted.clear()
        # Another size: the object's is reported, and no buffer is asked for or handed over.
        assert backend.read_whole(KEY, len(DATA) + 1, allocate, adopt=adopted.append) == len(DATA)
        assert backend.read_whole(KEY, len(DATA) - 1, allocate, adopt=adopted.append) == len(DATA)
        assert backend.read_whole(KEY, 1 << 62, allocate, adopt=adopted.append) == len(DATA)
        assert asked == [] and adopted == []
        assert backend.read_whole("blobs/ab/none", 4, allocate) is None
        assert asked == []
        self.raw_put(backend, "blobs/00/empty", b"")
        assert backend.read_whole("blobs/00/empty", 0, lambda: memoryview(bytearray(0))) == 0

    def test_list_info_agrees_with_list_and_stat(self, backend: Backend) -> None:
        for key, data in (("blobs/aa/one", b"1"), ("blobs/bb/two", b"22"), ("other/x", b"333")):
            self.raw_put(backend, key, data)
        listed = dict(backend.list_info("blobs"))
        assert set(listed) == set(backend.list("blobs")) == {"blobs/aa/one", "blobs/bb/two"}
        for key, info in listed.items():
            stat = backend.stat(key)
            assert stat is not None
            assert info is None or info.size == stat.size

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
        assert set(view.list("blobs")) == {KEY} == {key for key, _ in view.list_info("blobs")}
        out = bytearray(len(DATA))
        assert view.read_whole(KEY, len(DATA), lambda: memoryview(out)) == len(DATA)
        assert out == DATA
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
        from .. import ContentStoreReader, ContentStoreWriter, gc, verify

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
