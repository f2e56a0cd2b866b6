"""Writing to object storage: the requests a write makes (counted by a proxy on loopback).

A new blob is put at once (its conditional put refuses a copy stored already, so no look comes
first); a digest the logs name is looked for first, so unchanged bytes are never sent; each
record is followed by one look at its blob (the check against a concurrent gc); a writer that
created the store does not read its logs; a log is created beside the first upload.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from s3fixtures import S3Server
from s3proxy import FaultProxy
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas._meanwhile import meanwhile
from tensorcas.backends.objectstore import ObjectStoreBackend, segment_key
from tensorcas.format import blob_key
from tensorcas.hashing import hash_storage
from tensorcas.store import open_backend

#: Two large tensors (loose blobs, one PUT each; over 1 MiB, so probably-new ones are hashed
#: and put, not hashed first on a hint).
TENSORS = {f"t{i}": torch.randn(300_000, generator=torch.Generator().manual_seed(i)) for i in range(2)}


@pytest.fixture
def proxy(s3_server: S3Server):
    with FaultProxy(s3_server.endpoint) as p:
        yield p


def _requests(proxy: FaultProxy) -> list[tuple[str, str, int]]:
    """The requests the proxy saw since the last call: (method, path, body bytes)."""
    with proxy._lock:
        seen = list(proxy.requests)
        proxy.requests.clear()
    return seen


def _blob_requests(seen: list[tuple[str, str, int]], digest: str) -> list[str]:
    key = blob_key(digest)
    return [method for method, path, _ in seen if path.split("?")[0].endswith(key)]


def _backend(s3_server: S3Server, url: str, proxy: FaultProxy | None = None) -> ObjectStoreBackend:
    backend = open_backend(url, storage_options=s3_server.options(None if proxy is None else proxy.endpoint))
    assert isinstance(backend, ObjectStoreBackend)
    return backend


def test_a_new_store_and_new_blobs_cost_no_look_before_their_puts(proxy, s3_server, s3_url):
    backend = _backend(s3_server, s3_url, proxy)
    writer = ContentStoreWriter(backend)
    opened = _requests(proxy)
    # The marker (absent), a listing (nothing else there), the marker put: not read back.
    assert [method for method, _, _ in opened] == ["GET", "GET", "PUT"], opened
    assert sum("tensorcas.json" in path for _, path, _ in opened) == 2
    for name, tensor in TENSORS.items():
        writer.write_tensor(name, tensor)
        seen = _requests(proxy)
        digest = hash_storage(tensor.untyped_storage())
        # The blob put at once, and looked at once after its record (the check against gc).
        assert _blob_requests(seen, digest) == ["PUT", "HEAD"], seen
        # No listing of the logs: the store was created by this writer's opening.
        assert not any("list-type=2" in path for _, path, _ in seen), seen
        log_puts = [p for m, p, _ in seen if m == "PUT" and "/logs/" in p]
        # The first write also creates the log (its first segment, its header), beside the upload.
        assert len(log_puts) == (3 if name == "t0" else 1), seen
    writer.close()
    reader = ContentStoreReader(_backend(s3_server, s3_url), verify=True)
    for name, tensor in TENSORS.items():
        assert torch.equal(reader.read_tensor(name), tensor)


def test_unchanged_bytes_are_looked_for_first_and_never_sent(proxy, s3_server, s3_url):
    with ContentStoreWriter(_backend(s3_server, s3_url)) as writer:
        for name, tensor in TENSORS.items():
            writer.write_tensor(name, tensor)
    _requests(proxy)
    with ContentStoreWriter(_backend(s3_server, s3_url, proxy)) as writer:
        # The same names (hashed first on the hint), and a new name for bytes the logs name.
        for name, tensor in TENSORS.items():
            writer.write_tensor(name, tensor.clone())
        writer.write_tensor("renamed", TENSORS["t0"].clone())
    seen = _requests(proxy)
    for tensor in TENSORS.values():
        blob = _blob_requests(seen, hash_storage(tensor.untyped_storage()))
        assert "PUT" not in blob and blob.count("HEAD") >= 2, seen  # looked for, then checked
    sent = sum(n for method, path, n in seen if method == "PUT" and "/blobs/" in path)
    assert sent == 0, seen


def test_a_new_blob_stored_already_is_refused_by_its_put_and_taken_as_stored(proxy, s3_server, s3_url):
    """Bytes stored under their digest that no log names (a writer that died before its record):
    the conditional put is refused, and the copy there is used (only looked at, once)."""
    tensor = TENSORS["t0"]
    digest = hash_storage(tensor.untyped_storage())
    direct = _backend(s3_server, s3_url)
    with ContentStoreWriter(direct) as writer:
        writer.write_tensor("other", TENSORS["t1"])
    assert direct.put_if_absent(blob_key(digest), bytes(tensor.untyped_storage()))
    before = direct.stat(blob_key(digest))
    _requests(proxy)
    with ContentStoreWriter(_backend(s3_server, s3_url, proxy)) as writer:
        writer.write_tensor("t0", tensor)
    seen = _requests(proxy)
    assert _blob_requests(seen, digest) == ["PUT", "HEAD", "HEAD"], seen  # refused, found, checked
    assert direct.stat(blob_key(digest)) == before  # not replaced
    assert torch.equal(ContentStoreReader(direct, verify=True).read_tensor("t0"), tensor)


def test_a_damaged_blob_no_log_names_is_replaced(s3_server, s3_url):
    tensor = TENSORS["t0"]
    digest = hash_storage(tensor.untyped_storage())
    direct = _backend(s3_server, s3_url)
    with ContentStoreWriter(direct) as writer:
        writer.write_tensor("other", TENSORS["t1"])
    assert direct.put_if_absent(blob_key(digest), b"cut short")
    with ContentStoreWriter(direct) as writer:
        writer.write_tensor("t0", tensor)
    info = direct.stat(blob_key(digest))
    assert info is not None and info.size == tensor.nbytes
    assert torch.equal(ContentStoreReader(direct, verify=True).read_tensor("t0"), tensor)


def test_creating_a_log_looks_for_it_and_puts_its_first_segment_at_once(proxy, s3_server, s3_url):
    backend = _backend(s3_server, s3_url, proxy)
    appender = backend.open_append("logs/w.log")
    assert sorted(method for method, _, _ in _requests(proxy)) == ["HEAD", "PUT"]
    appender.append(b"line\n")
    appender.close()
    # A plain object there already: refused, and the first segment put beside it taken back.
    backend.put_if_absent("logs/plain.log", b"whole\n")
    with pytest.raises(FileExistsError):
        backend.open_append("logs/plain.log")
    assert backend.stat(segment_key("logs/plain.log", 0)) is None
    assert backend.get("logs/plain.log") == b"whole\n"
    assert set(backend.list("logs")) == {"logs/w.log", "logs/plain.log"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_work_overlapped_with_requests_runs_in_a_forked_child():
    """The threads kept for overlapped work (listing logs, creating a log) do not exist in a
    forked child, which makes its own rather than queue work that never runs."""
    assert [meanwhile(lambda i=i: i).result(10) for i in range(8)] == list(range(8))
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if its work ran
        code = 1
        try:
            code = 0 if meanwhile(lambda: 42).result(20) == 42 else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's overlapped work never ran")
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_a_store_that_keeps_what_it_is_given_gets_a_copy_of_a_tensors_memory():
    """obstore's in-memory store keeps the buffer a put gives it: a tensor's own memory, sent as
    it is to a service, must be copied for it, or changing the tensor would change the blob."""
    from obstore.store import MemoryStore

    backend = ObjectStoreBackend(MemoryStore(), "memory-test")
    tensor = TENSORS["t0"].clone()
    with ContentStoreWriter(backend) as writer:
        writer.write_tensor("x", tensor)
    tensor.fill_(7.0)
    assert torch.equal(ContentStoreReader(backend, verify=True).read_tensor("x"), TENSORS["t0"])


def _stored_then_reopened(
    s3_server: S3Server, s3_url: str, *, seed: int, count: int
) -> tuple[list[torch.Tensor], ObjectStoreBackend, ContentStoreWriter]:
    """``count`` large tensors stored by one writer, and a second writer on a backend of its
    own that has read the logs already (to write them again)."""
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(300_000, generator=g) for _ in range(count)]
    with ContentStoreWriter(_backend(s3_server, s3_url)) as writer:
        writer.write_tensors([(f"a/{i}", t) for i, t in enumerate(tensors)])
    backend = _backend(s3_server, s3_url)
    writer = ContentStoreWriter(backend)
    writer.write_tensor("warm", torch.zeros(1))
    return tensors, backend, writer


def _slow_stat(backend: ObjectStoreBackend) -> tuple[Callable[[str], Any], list[int]]:
    """A ``stat`` that takes a round trip (50 ms: long enough for looks sent together to
    overlap), and the most of its calls in flight at once so far (``most[0]``)."""
    in_flight, most = [0], [0]
    lock = threading.Lock()
    real_stat = backend.stat

    def stat(key: str) -> Any:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            time.sleep(0.05)
            return real_stat(key)
        finally:
            with lock:
                in_flight[0] -= 1

    return stat, most


def test_a_batch_looks_at_its_stored_blobs_at_once_after_its_last_record(s3_server, s3_url):
    """Unchanged tensors written again in one batch: the looks after the last record (the check
    against a concurrent gc) go out together on object storage, and a blob gone by then (here:
    deleted just before them, as gc would) is stored again."""
    tensors, backend, writer = _stored_then_reopened(s3_server, s3_url, seed=7, count=4)
    stat, most = _slow_stat(backend)
    gone = blob_key(hash_storage(tensors[2].untyped_storage()))
    real_at_once = writer._stored_at_once

    def collected_first(appended):
        backend.delete(gone)  # gc took it after the record was appended
        backend.stat = stat  # type: ignore[method-assign]
        try:
            return real_at_once(appended)
        finally:
            del backend.stat

    writer._stored_at_once = collected_first  # type: ignore[method-assign]
    writer.write_tensors([(f"b/{i}", t) for i, t in enumerate(tensors)])
    writer.close()
    assert most[0] >= 2, "the looks after the last record went out one at a time"
    reader = ContentStoreReader(_backend(s3_server, s3_url), verify=True)
    for i, t in enumerate(tensors):
        assert torch.equal(reader.read_tensor(f"b/{i}"), t)


def test_a_batch_of_stored_blobs_looks_for_them_ahead_together(s3_server, s3_url):
    """Unchanged tensors written again: the looks before their records (is the blob stored?)
    go out several at once, for the blobs hashed already; a blob found that way and collected
    before its record is stored again by the check after the last record."""
    tensors, backend, writer = _stored_then_reopened(s3_server, s3_url, seed=8, count=6)
    stat, most = _slow_stat(backend)
    blobs = writer.store.blobs
    real_look_ahead = blobs.look_ahead
    gone = blob_key(hash_storage(tensors[4].untyped_storage()))
    deleted = []

    def look_then_collect(wanted):
        looked = real_look_ahead(wanted)
        if any(blob_key(d) == gone for d, _ in looked) and not deleted:
            backend.delete(gone)  # found stored a moment ago, collected before its record
            deleted.append(gone)
        return looked

    blobs.look_ahead = look_then_collect  # type: ignore[method-assign]
    writer._stored_at_once = lambda appended: [False] * len(appended)  # type: ignore[method-assign]
    backend.stat = stat  # type: ignore[method-assign]
    try:
        writer.write_tensors([(f"b/{i}", t) for i, t in enumerate(tensors)])
    finally:
        del backend.stat
    writer.close()
    assert most[0] >= 2, "the looks before the records went out one at a time"
    assert deleted == [gone]
    reader = ContentStoreReader(_backend(s3_server, s3_url), verify=True)
    for i, t in enumerate(tensors):
        assert torch.equal(reader.read_tensor(f"b/{i}"), t)
    assert blobs._looked_ahead == {}  # nothing left over for a later write
