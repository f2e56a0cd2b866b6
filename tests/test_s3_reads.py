"""Reading from object storage: the requests a read makes (counted by a proxy on loopback), a
blob of another size than its record refused before its body is read, and tensors that own
their memory whether the response's buffer was handed over or copied."""

from __future__ import annotations

import pytest
import torch

from s3fixtures import BUCKET, FAST_RETRY, S3Server
from s3proxy import FaultProxy
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas.backends.base import Backend
from tensorcas.backends.objectstore import ObjectStoreBackend
from tensorcas.errors import CorruptObjectError
from tensorcas.format import blob_key
from tensorcas.store import open_backend
from tensorcas.testing import BackendTests

#: Loose blobs (over the pack threshold): one large, one just above it; and two packed ones (a
#: closed pack of more than one append is one object).
TENSORS = {
    "large": torch.randn(600_000),
    "medium": torch.arange(20_000, dtype=torch.float64),
    "small": torch.ones(5),
    "small2": torch.zeros(7),
}


@pytest.fixture
def proxy(s3_server: S3Server):
    with FaultProxy(s3_server.endpoint) as p:
        yield p


def _write(s3_server: S3Server, url: str) -> None:
    with ContentStoreWriter(open_backend(url, storage_options=s3_server.options())) as writer:
        for name, tensor in TENSORS.items():
            writer.write_tensor(name, tensor)


def _requests(proxy: FaultProxy) -> list[tuple[str, str]]:
    """The requests the proxy saw since the last call, as (method, path without the bucket)."""
    with proxy._lock:
        seen = [(method, path) for method, path, _ in proxy.requests]
        proxy.requests.clear()
    return seen


def test_opening_is_three_requests_and_reading_a_tensor_one_get(proxy, s3_server, s3_url):
    _write(s3_server, s3_url)
    reader = ContentStoreReader(open_backend(s3_url, storage_options=s3_server.options(proxy.endpoint)))
    opened = _requests(proxy)
    # The marker and the listing of the logs (which gives their sizes) at once, then the one
    # log: no HEAD.
    assert [method for method, _ in opened] == ["GET", "GET", "GET"], opened
    assert {"tensorcas.json" in path for _, path in opened[:2]} == {True, False}
    assert {"list-type=2" in path for _, path in opened[:2]} == {True, False}
    assert "/logs/" in opened[2][1]
    for name in TENSORS:
        assert torch.equal(reader.read_tensor(name), TENSORS[name])
        seen = _requests(proxy)
        assert [method for method, _ in seen] == ["GET"], (name, seen)
    # A blob asked for by digest: located (one HEAD, which gives its size), then one GET.
    digest = reader.read_tensor_metadata("medium").blob
    reader = ContentStoreReader(
        open_backend(s3_url, storage_options=s3_server.options(proxy.endpoint)), cache=False
    )
    _requests(proxy)
    assert reader.read_storage(digest).nbytes() == TENSORS["medium"].nbytes
    assert sorted(method for method, _ in _requests(proxy)) == ["GET", "HEAD"]


def test_a_large_blob_is_one_get_then_parallel_ranges(proxy, s3_server, s3_url, monkeypatch):
    from tensorcas.backends.objectstore import backend

    monkeypatch.setattr(backend, "READ_PART_SIZE", 1 << 20)
    _write(s3_server, s3_url)
    reader = ContentStoreReader(open_backend(s3_url, storage_options=s3_server.options(proxy.endpoint)))
    _requests(proxy)
    assert torch.equal(reader.read_tensor("large"), TENSORS["large"])  # 2.4 MB: 3 parts
    assert [method for method, _ in _requests(proxy)] == ["GET"] * 3


def _plant(s3_server: S3Server, url: str, name: str, change) -> None:
    """Replace the blob of ``name`` by ``change(its bytes)``, behind the store's back."""
    reader = ContentStoreReader(open_backend(url, storage_options=s3_server.options()))
    key = f"{url.split('/', 3)[3]}/{blob_key(reader.read_tensor_metadata(name).blob)}"
    client = s3_server.client()
    data = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    client.put_object(Bucket=BUCKET, Key=key, Body=change(data))


@pytest.mark.parametrize("part", [None, 1 << 20])
@pytest.mark.parametrize(
    "change, holds",
    [(lambda d: d[:-4], "holds 2399996 bytes"), (lambda d: d + b"more", "holds 2400004 bytes")],
    ids=["shorter", "longer"],
)
def test_a_blob_of_another_size_than_its_record_is_refused(s3_server, s3_url, monkeypatch, part, change, holds):
    from tensorcas.backends.objectstore import backend

    if part is not None:  # read as a first part and ranges
        monkeypatch.setattr(backend, "READ_PART_SIZE", part)
    _write(s3_server, s3_url)
    _plant(s3_server, s3_url, "large", change)
    reader = ContentStoreReader(open_backend(s3_url, storage_options=s3_server.options()))
    with pytest.raises(CorruptObjectError, match=f"tensor 'large'.*{holds} but 2400000 were stored"):
        reader.read_tensor("large")
    assert torch.equal(reader.read_tensor("medium"), TENSORS["medium"])  # the rest reads on


def test_tensors_read_own_their_memory(s3_server, s3_url):
    """A response's buffer becomes the tensor's memory: writing to one tensor changes no other
    read, before or after."""
    _write(s3_server, s3_url)
    reader = ContentStoreReader(open_backend(s3_url, storage_options=s3_server.options()), cache=False)
    first = reader.read_tensor("large")
    second = reader.read_tensor("large")
    assert first.data_ptr() != second.data_ptr()
    first.add_(1)
    assert torch.equal(second, TENSORS["large"])
    assert torch.equal(reader.read_tensor("large"), TENSORS["large"])
    del second
    assert torch.equal(first, TENSORS["large"] + 1)  # its memory lives as long as it does


def test_an_in_memory_client_store_is_copied_from_never_handed_over():
    """obstore's in-memory store answers with the stored bytes themselves: a read copies them,
    so that writing to a tensor read cannot change the store."""
    from obstore.store import MemoryStore

    backend = ObjectStoreBackend(MemoryStore(), "memory-obstore", retry=FAST_RETRY)
    data = torch.randn(50_000)
    with ContentStoreWriter(backend) as writer:
        writer.write_tensor("x", data)
    adopted: list[memoryview] = []
    key = blob_key(ContentStoreReader(backend).read_tensor_metadata("x").blob)
    out = bytearray(data.nbytes)
    assert backend.read_whole(key, data.nbytes, lambda: memoryview(out), adopt=adopted.append) == data.nbytes
    assert adopted == [] and bytes(out) == data.numpy().tobytes()
    tensor = ContentStoreReader(backend, cache=False).read_tensor("x")
    tensor.zero_()
    assert torch.equal(ContentStoreReader(backend).read_tensor("x"), data)


class TestOnObstoresMemoryStore(BackendTests):
    """The contract on obstore's in-memory store, whose answers are the stored bytes themselves
    (never handed over: see ``backends/objectstore/buffers.py``)."""

    @pytest.fixture
    def backend(self) -> Backend:
        from obstore.store import MemoryStore

        return ObjectStoreBackend(MemoryStore(), "memory-obstore", retry=FAST_RETRY)


def test_handing_a_buffer_over_does_not_depend_on_the_shared_python_api_functions():
    """Another library may set argument types on ``ctypes.pythonapi``'s functions; the ones this
    package calls are its own, and it sets none on the shared ones."""
    import ctypes

    from tensorcas.backends.objectstore import buffers

    shared = ctypes.pythonapi.PyObject_GetBuffer
    assert buffers._get_buffer is not shared
    saved = shared.argtypes
    shared.argtypes = [ctypes.py_object, ctypes.c_void_p, ctypes.c_int]  # someone else's
    try:
        data = bytes(1 << 20)
        view = buffers.owned_view(data)
        if view is not None:  # None only where the buffer is not aligned for every dtype
            assert view.nbytes == len(data) and view[:4].tobytes() == bytes(4)
    finally:
        shared.argtypes = saved
