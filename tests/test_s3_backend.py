"""The object-storage backend against an S3 server on loopback: the conformance suite, checked
through boto3 rather than the backend itself, plus what only segments and URLs have."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from s3fixtures import BUCKET, FAST_RETRY, S3Server
from tensorcas.backends.base import Backend
from tensorcas.backends.objectstore import ObjectStoreBackend, segment_key
from tensorcas.testing import BackendTests


def _backend(s3_server: S3Server, url: str, **overrides) -> ObjectStoreBackend:
    return ObjectStoreBackend.from_url(url, {**s3_server.options(), **overrides}, retry=FAST_RETRY)


class TestObjectStoreBackend(BackendTests):
    @pytest.fixture
    def backend(self, s3_server: S3Server, s3_url: str) -> Backend:
        backend = _backend(s3_server, s3_url)
        backend.client = s3_server.client()  # type: ignore[attr-defined]
        backend.prefix = s3_url.split("/", 3)[3]  # type: ignore[attr-defined]
        return backend

    # Look at the bucket through boto3: a logical key is its plain object or its segments.
    def raw_get(self, backend: Backend, key: str) -> bytes | None:
        client, prefix = backend.client, backend.prefix  # type: ignore[attr-defined]
        try:
            return client.get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read()
        except client.exceptions.NoSuchKey:
            pass
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/{key}.seg/").get(
            "Contents", []
        )
        if not listed:
            return None
        names = sorted(o["Key"] for o in listed)
        with ThreadPoolExecutor(8) as pool:
            return b"".join(
                pool.map(lambda n: client.get_object(Bucket=BUCKET, Key=n)["Body"].read(), names)
            )

    def raw_put(self, backend: Backend, key: str, data: bytes) -> None:
        client, prefix = backend.client, backend.prefix  # type: ignore[attr-defined]
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{key}", Body=data)


def test_large_objects_go_in_parts_and_come_back_in_parallel_ranges(s3_server, s3_url, monkeypatch):
    from tensorcas.backends.objectstore import backend as objectstore

    monkeypatch.setattr(objectstore, "MULTIPART_THRESHOLD", 1 << 20)
    monkeypatch.setattr(objectstore, "READ_PART_SIZE", 256 << 10)
    backend = _backend(s3_server, s3_url)
    data = bytes(range(251)) * 12_000  # ~3 MB: a multipart upload (parts of 8 MiB: one), 12 ranges
    pieces = (memoryview(data)[i : i + 100_000] for i in range(0, len(data), 100_000))
    assert backend.put_if_absent("blobs/ab/big", pieces) is True
    assert backend.put_if_absent("blobs/ab/big", memoryview(data)) is False  # checked first
    out = bytearray(len(data) + 10)
    assert backend.read_into("blobs/ab/big", memoryview(out)) == len(data)
    assert out[: len(data)] == data
    assert backend.read_into("blobs/ab/none", memoryview(bytearray(1 << 20))) is None


def test_segments_are_immutable_objects_named_by_their_end(s3_server, s3_url):
    backend = _backend(s3_server, s3_url)
    appender = backend.open_append("logs/w.log")
    appender.append(b"one\n")
    appender.append(b"")  # nothing: no segment
    appender.append(b"three\n")
    prefix = s3_url.split("/", 3)[3]
    listed = s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")["Contents"]
    assert sorted(o["Key"][len(prefix) + 1 :] for o in listed) == [
        segment_key("logs/w.log", 0),
        segment_key("logs/w.log", 4),
        segment_key("logs/w.log", 10),
    ]
    # Another process's view: it lists, then reads within what it knows without listing again.
    other = _backend(s3_server, s3_url)
    assert list(other.list("logs")) == ["logs/w.log"]
    assert other.read_range("logs/w.log", 2, 100) == b"e\nthree\n"
    appender.append(b"four\n")
    assert other.read_range("logs/w.log", 10, 100) == b"four\n"  # past the known end: re-listed
    info = other.stat("logs/w.log")
    assert info is not None and info.size == 15
    # A planted segment that does not continue the chain is not part of the object.
    s3_server.client().put_object(
        Bucket=BUCKET, Key=f"{prefix}/{segment_key('logs/w.log', 99)}", Body=b"x"
    )
    assert other.get("logs/w.log") == b"one\nthree\nfour\n"
    assert other.delete("logs/w.log") is True
    assert other.stat("logs/w.log") is None and list(other.list("")) == []


def test_a_closed_log_becomes_one_object_and_readers_follow(s3_server, s3_url):
    import torch

    from tensorcas import ContentStoreReader, ContentStoreWriter

    backend = _backend(s3_server, s3_url)
    writer = ContentStoreWriter(backend)
    for i in range(5):
        writer.write_tensor(f"t{i}", torch.full((4,), float(i)))  # packed: pack and log grow
    early = ContentStoreReader(_backend(s3_server, s3_url))  # knows the segments as they are
    assert early.list_tensors() == [f"t{i}" for i in range(5)]
    prefix = s3_url.split("/", 3)[3] + "/"

    def keys() -> list[str]:
        listed = (
            s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        )
        return sorted(o["Key"][len(prefix) :] for o in listed)

    assert sum(".seg/" in k for k in keys()) > 10
    writer.write_tensor("last", torch.ones(2))
    writer.close()
    assert not any(".seg/" in k for k in keys())  # one object per log and pack now
    for i in range(5):  # the early reader finds its segments gone and reads the objects
        assert torch.equal(early.read_tensor(f"t{i}"), torch.full((4,), float(i)))
    early.store.refresh()
    assert torch.equal(early.read_tensor("last"), torch.ones(2))
    fresh = ContentStoreReader(_backend(s3_server, s3_url), verify=True)
    assert fresh.list_tensors() == [*(f"t{i}" for i in range(5)), "last"]
    assert torch.equal(fresh.read_tensor("t3"), torch.full((4,), 3.0))


def test_a_cache_directory_serves_whole_objects_by_their_etag(s3_server, s3_url, tmp_path):
    from s3proxy import FaultProxy

    data = bytes(range(256)) * 8192  # 2 MiB
    writer = _backend(s3_server, s3_url)
    assert writer.put_if_absent("blobs/ab/big", data)
    with FaultProxy(s3_server.endpoint) as proxy:
        options = {**s3_server.options(proxy.endpoint), "cache_dir": str(tmp_path / "cache")}
        cached = ObjectStoreBackend.from_url(s3_url, options)
        for _ in range(2):
            out = bytearray(len(data))
            assert cached.read_into("blobs/ab/big", memoryview(out)) == len(data) and out == data
        assert proxy.count("GET") == 1 and proxy.count("HEAD") == 2  # the second read: a look only
        # Replaced (a damaged blob healed): another ETag, so the copy kept is not used.
        other = bytes(reversed(data))
        assert writer.put_if_absent("blobs/ab/big", other, overwrite=True)
        out = bytearray(len(data))
        assert cached.read_into("blobs/ab/big", memoryview(out)) == len(data) and out == other
        assert cached.read_into("blobs/ab/none", memoryview(bytearray(2 << 20))) is None
