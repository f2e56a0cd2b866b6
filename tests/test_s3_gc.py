"""gc on S3 moves blobs aside and back by server-side copy: no blob's bytes pass through the
client (counted by the proxy on loopback), a restore never replaces a blob stored again, and
what the service cannot copy itself is copied through the client as before."""

from __future__ import annotations

import time

import pytest
import torch

import tensorcas
from s3fixtures import BUCKET, S3Server
from s3proxy import FaultProxy
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas.backends.objectstore import COPY_LIMIT, ObjectStoreBackend
from tensorcas.format import blob_key
from tensorcas.store import Store, open_backend

#: 12 MB: one PUT when written, and far more than everything else gc sends or receives.
BIG = 3_000_000


@pytest.fixture
def proxy(s3_server: S3Server):
    with FaultProxy(s3_server.endpoint) as p:
        yield p


def _through(proxy: FaultProxy, s3_server: S3Server, url: str, **options: str) -> Store:
    backend = open_backend(url, storage_options={**s3_server.options(proxy.endpoint), **options})
    return Store.open(backend)


def _moved(proxy: FaultProxy) -> tuple[int, int]:
    """Bytes sent to the service and bytes answered, since the last call."""
    with proxy._lock:
        sent, answered = sum(n for _, _, n in proxy.requests), proxy.answer_bytes
        proxy.requests.clear()
        proxy.answer_bytes = 0
    return sent, answered


def test_gc_of_a_large_blob_moves_no_blob_bytes_through_the_client(s3_server, s3_url, proxy):
    options = s3_server.options()
    with ContentStoreWriter(open_backend(s3_url, storage_options=options)) as writer:
        writer.write_tensor("big", torch.randn(BIG))
        writer.write_tensor("kept", torch.ones(3))
    digest = Store.open(open_backend(s3_url, storage_options=options)).get_record("big").blob
    tensorcas.rm(open_backend(s3_url, storage_options=options), ["big"])
    _moved(proxy)
    report = tensorcas.gc(_through(proxy, s3_server, s3_url), grace_seconds=0)
    assert [b.digest for b in report.removed_blobs] == [digest]
    sent, answered = _moved(proxy)
    assert sent < 64 << 10 and answered < 256 << 10, (sent, answered)
    keys = s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix=s3_url.split("/", 3)[3])
    assert not any(blob_key(digest) in o["Key"] or ".gc-" in o["Key"] for o in keys["Contents"])


@pytest.mark.parametrize("conditional", [False, True], ids=["check-then-copy", "copy-if-not-exists"])
def test_a_blob_moved_aside_comes_back_by_copy_and_never_replaces_one_stored_again(
    s3_server, s3_url, proxy, conditional
):
    options = {"copy_if_not_exists": "multipart"} if conditional else {}
    tensor = torch.randn(BIG)
    with ContentStoreWriter(open_backend(s3_url, storage_options=s3_server.options())) as writer:
        writer.write_tensor("x", tensor)
    store = _through(proxy, s3_server, s3_url, **options)
    key = blob_key(store.get_record("x").blob)
    # Moved aside, then put back (as gc does when a record uses it by its second read).
    trash = store.blobs.collector.quarantine(key, time.time() + 60)
    assert trash is not None and not store.backend.exists(key)
    _moved(proxy)
    store.blobs.collector.restore(trash)
    sent, answered = _moved(proxy)
    assert sent < 64 << 10 and answered < 64 << 10, (sent, answered)
    assert not store.backend.exists(trash)
    assert torch.equal(ContentStoreReader(store.backend, verify=True).read_tensor("x"), tensor)
    # Moved aside again, and meanwhile a writer stores the blob again: the restore leaves the
    # writer's object as it is.
    trash = store.blobs.collector.quarantine(key, time.time() + 60)
    assert trash is not None
    with ContentStoreWriter(open_backend(s3_url, storage_options=s3_server.options())) as writer:
        writer.write_tensor("y", tensor)
    client = s3_server.client()
    prefix = s3_url.split("/", 3)[3]
    etag = client.head_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["ETag"]
    stamp = client.head_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["LastModified"]
    _moved(proxy)
    store.blobs.collector.restore(trash)
    seen = [(m, path) for m, path, _ in proxy.requests]
    assert any("?uploads" in path for _, path in seen) == conditional, seen  # a multipart copy
    after = client.head_object(Bucket=BUCKET, Key=f"{prefix}/{key}")
    assert (after["ETag"], after["LastModified"]) == (etag, stamp)
    assert not store.backend.exists(trash)
    assert tensorcas.verify(store.backend).ok


def test_what_the_service_cannot_copy_is_declined(s3_server, s3_url):
    backend = open_backend(s3_url, storage_options=s3_server.options())
    assert isinstance(backend, ObjectStoreBackend)
    backend.put_if_absent("blobs/a", b"abc")
    assert backend.copy("blobs/a", "blobs/b", 3, if_absent=True) is True
    assert backend.get("blobs/b") == b"abc"
    assert backend.copy("blobs/a", "blobs/b", 3, if_absent=True) is False
    assert backend.copy("blobs/a", "blobs/c", COPY_LIMIT + 1, if_absent=False) is None
    assert backend.copy("blobs/none", "blobs/d", 3, if_absent=False) is None
    appender = backend.open_append("packs/p.pack")  # an object of segments
    appender.append(b"xyz")
    assert backend.copy("packs/p.pack", "packs/q.pack", 3, if_absent=False) is None
    assert not backend.exists("blobs/c") and not backend.exists("packs/q.pack")
