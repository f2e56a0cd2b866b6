"""Logs read at once give exactly what reading them one after another gives, for any store:
damaged and hostile logs, logs that change between the listing and the read, failed reads
(the same error, and a state a later refresh carries on from), and a bounded memory."""

from __future__ import annotations

import threading
from typing import Any

import blake3
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensorcas
from tensorcas import format as fmt
from tensorcas import records
from tensorcas.backends import MemoryBackend
from tensorcas.errors import StoreIOError
from tensorcas.store import Store


class Listed(MemoryBackend):
    """An in-memory backend whose listing gives sizes (as an object store's does), reading
    ``parallel_reads`` logs at once, failing reads of the logs named in ``fail``."""

    def __init__(self, parallel: int) -> None:
        super().__init__()
        self.parallel_reads = parallel
        self.fail: set[str] = set()
        self.log_bytes_out = 0  # log bytes read and not yet released (see the memory test)

    def list_info(self, prefix: str):
        return [(key, self.stat(key)) for key in self.list(prefix)]

    def read_range(self, key: str, offset: int, length: int) -> bytes | None:
        if key in self.fail:
            raise StoreIOError(f"reading {key} failed: connection reset")
        return super().read_range(key, offset, length)

    def clone(self, parallel: int) -> Listed:
        other = Listed(parallel)
        with self._lock:
            other._objects = {k: bytes(v) for k, v in self._objects.items()}
            other._mtimes = dict(self._mtimes)
        return other


def _write(backend: MemoryBackend, sessions: int, seed: int) -> None:
    for i in range(sessions):
        with tensorcas.ContentStoreWriter(backend) as writer:
            writer.write_tensor(f"t{seed}-{i}", torch.full((4,), float(i)))
            writer.write_tensor("shared", torch.full((2,), float(seed + i)))
            if i % 2:
                writer.write_tensor(f"big{i}", torch.arange(300.0))  # a blob line and a pack


def _state(store: Store) -> dict[str, Any]:
    log = store.log  # looked at as it is: records() and roots() would read the logs again
    return {
        "records": {name: log.peek(name) for name in log._entries},
        "positions": {name: e.position for name, e in log._entries.items()},
        "roots": dict(log._roots),
        "problems": sorted(map(repr, log.problems())),
        "logs": {k: (s.offset, s.lines, s.header_ok, s.rejected, s.damaged) for k, s in log._logs.items()},
        "packs": sorted(map(repr, store.blobs.packs.problems.values())),
    }


def _refresh(store: Store, listing: list | None) -> str | None:
    try:
        store.log.refresh(None if listing is None else list(listing))
    except StoreIOError as exc:
        return str(exc)
    return None


#: What may happen to a log: (kind, where as a fraction of it, bytes).
_damage = st.tuples(
    st.sampled_from(
        ["none", "torn", "garbage", "long", "header", "cut", "gone", "directory", "empty", "newlines", "grow"]
    ),
    st.floats(0, 1),
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b),
)


def _damage_log(backend: Listed, key: str, kind: str, where: float, junk: bytes, window: int) -> None:
    data = bytearray(backend._objects.get(key, b""))
    cut = int(len(data) * where)
    if kind == "torn":
        data += junk
    elif kind == "garbage":
        data[cut:cut] = junk + b"\n"
    elif kind == "long":
        data[cut:cut] = b"x" * (window + len(junk)) + b"\n"
    elif kind == "header":  # a sound header of a version this release does not read
        first = data.find(b"\n") + 1
        body = b'{"format":"tensorcas-log","version":%d,"writer":"w"}' % (2 + len(junk))
        data[:first] = blake3.blake3(body).digest(8).hex().encode() + b" " + body + b"\n"
    elif kind == "cut":
        del data[cut:]
    elif kind == "gone":
        backend._objects.pop(key, None)
        return
    elif kind == "directory":
        backend._objects[key + "/part"] = bytes(junk)
        backend._mtimes[key + "/part"] = 0.0
        return
    elif kind == "empty":
        data = bytearray()
    elif kind == "newlines":
        data += b"\n" * (1 + len(junk))
    elif kind == "grow":
        data += bytes(data[: max(1, cut)])
    backend._objects[key] = bytes(data)
    backend._mtimes[key] = 0.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sessions=st.integers(1, 6),
    first=st.lists(_damage, min_size=6, max_size=6),
    between=st.lists(_damage, min_size=6, max_size=6),
    failing=st.sets(st.integers(0, 7), max_size=2),
    window=st.sampled_from([256, 600, 16 << 20]),
    batch=st.sampled_from([(2, 400), (3, 1 << 20), (64, 64 << 20)]),
)
def test_parallel_and_sequential_reads_agree(sessions, first, between, failing, window, batch):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(records, "LOG_WINDOW", window)
        mp.setattr(records, "PREFETCH_LOGS", batch[0])
        mp.setattr(records, "PREFETCH_BYTES", batch[1])
        base = Listed(1)
        _write(base, sessions, 0)
        keys = sorted(k for k in base.list(fmt.LOGS) if fmt.is_log_key(k))
        for key, (kind, where, junk) in zip(keys, first):
            _damage_log(base, key, kind, where, junk, window)
        one, eight = base.clone(1), base.clone(8)
        stores = [Store(one), Store(eight)]
        # Opened: the same state whichever way the logs were read.
        assert [_refresh(s, None) for s in stores] == [None, None]
        assert _state(stores[0]) == _state(stores[1])
        # More writers append; the logs are listed; then they change before they are read.
        _write(one, 2, 100)
        eight._objects = {k: bytes(v) for k, v in one._objects.items()}
        eight._mtimes = dict(one._mtimes)
        listing = one.list_info(fmt.LOGS)
        keys = sorted(k for k in one.list(fmt.LOGS) if fmt.is_log_key(k))
        for backend in (one, eight):
            for key, (kind, where, junk) in zip(keys, between):
                _damage_log(backend, key, kind, where, junk, window)
            backend.fail = {keys[i] for i in failing if i < len(keys)}
        errors = [_refresh(s, listing) for s in stores]
        assert errors[0] == errors[1]
        assert _state(stores[0]) == _state(stores[1])
        # The failed reads succeed now: both carry on to the same state.
        for backend in (one, eight):
            backend.fail = set()
        assert [_refresh(s, None) for s in stores] == [None, None]
        assert _state(stores[0]) == _state(stores[1])


def test_a_store_of_2000_logs_is_not_held_in_memory_at_once():
    import tracemalloc

    backend = Listed(8)
    with tensorcas.ContentStoreWriter(backend) as writer:
        for i in range(40):
            writer.write_tensor(f"n{i:03d}", torch.full((2,), float(i)))
    (key,) = [k for k in backend.list(fmt.LOGS) if fmt.is_log_key(k)]
    # Its header and records (not its blob and seal lines, which the pack index keeps per log),
    # under 2,000 writers' logs: the index stays small, whatever reading the logs holds shows.
    lines = bytes(backend._objects[key]).split(b"\n")
    data = b"\n".join(line for line in lines if fmt.BLOB_LINE_START not in line and b'"op":"seal"' not in line)
    assert data.count(b"\n") == 41  # the header and 40 records
    for i in range(2000):
        backend._objects[f"{fmt.LOGS}/{i:032x}.log"] = bytearray(data)  # each read is a copy
        backend._mtimes[f"{fmt.LOGS}/{i:032x}.log"] = 0.0
    total = len(data) * 2000
    store = Store(backend)
    tracemalloc.start()
    try:
        store.log.refresh()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(store.log._logs) == 2001 and len(store.names()) == 40
    assert peak < total / 8, (peak, total)


def test_segmented_logs_read_at_once_on_object_storage_while_writers_append(s3_server, s3_url):
    from tensorcas.backends.objectstore import ObjectStoreBackend

    def backend(parallel: int | None = None) -> ObjectStoreBackend:
        made = ObjectStoreBackend.from_url(s3_url, s3_server.options())
        if parallel is not None:
            made.parallel_reads = parallel
        return made

    writers = [tensorcas.ContentStoreWriter(backend()) for _ in range(6)]
    for w, writer in enumerate(writers):  # every log open: a run of segments, not one object
        writer.write_tensor(f"w{w}/0", torch.full((3,), float(w)))
    reader = tensorcas.ContentStoreReader(backend())
    assert reader.store.backend.parallel_reads > 1
    start = threading.Barrier(len(writers) + 1)
    failures: list[BaseException] = []

    def append(w: int) -> None:
        try:
            start.wait()
            for i in range(1, 8):
                writers[w].write_tensor(f"w{w}/{i}", torch.full((3,), float(100 * w + i)))
            if w % 2:
                writers[w].close()  # its segments become one object while others are read
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(len(writers))]
    for thread in threads:
        thread.start()
    start.wait()
    seen: list[str] = []
    while any(thread.is_alive() for thread in threads):
        reader.refresh()
        names = reader.list_tensors()
        assert set(seen) <= set(names)  # nothing read is ever lost again
        seen = names
    for thread in threads:
        thread.join()
    assert not failures, failures
    reader.refresh()
    for w in range(len(writers)):
        for i in range(8):
            want = torch.full((3,), float(w if i == 0 else 100 * w + i))
            assert torch.equal(reader.read_tensor(f"w{w}/{i}"), want)
    sequential = tensorcas.ContentStoreReader(backend(1))
    assert sequential.store.records() == reader.store.records()
    assert sequential.store.problems() == reader.store.problems() == []
    for writer in writers:
        writer.close()


def test_hostile_keys_on_object_storage_read_alike_at_once_or_not(s3_server, s3_url):
    from tensorcas.backends.objectstore import ObjectStoreBackend

    def backend(parallel: int) -> ObjectStoreBackend:
        made = ObjectStoreBackend.from_url(s3_url, s3_server.options())
        made.parallel_reads = parallel
        return made

    for i in range(3):
        with tensorcas.ContentStoreWriter(backend(8)) as writer:
            writer.write_tensor(f"t{i}", torch.full((2,), float(i)))
    client, prefix = s3_server.client(), s3_url.split("/", 3)[3]
    bucket = s3_url.split("/", 3)[2]
    keys = sorted(k for k in backend(1).list(fmt.LOGS) if fmt.is_log_key(k))
    planted = {
        "logs/dir.log/part": b"x\n",  # a log that is a "directory"
        "logs/torn.log": (backend(1).get(keys[0]) or b"")[:-5],  # a torn copy of a log
        "logs/nonl.log": b"y" * 300,  # no line end at all
        f"{keys[1]}.seg/00000000000000000099": b"z",  # a segment that continues no chain
    }
    for key, body in planted.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body)
    one, eight = Store(backend(1)), Store(backend(8))
    assert [_refresh(s, None) for s in (one, eight)] == [None, None]
    assert _state(one) == _state(eight)
    assert sorted(one.names()) == ["t0", "t1", "t2"]
    assert any("dir.log" in repr(p) for p in one.problems())
