"""The object-storage backend against an S3 server on loopback: the conformance suite, checked
through boto3 rather than the backend itself, plus what only segments and URLs have."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from s3fixtures import BUCKET, FAST_RETRY, S3Server
from tensorcas.backends.base import Backend
from tensorcas.backends.objectstore import ObjectStoreBackend
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
