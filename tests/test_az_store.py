"""A store on Azure Blob Storage (Azurite, Microsoft's emulator, on loopback): the backend
conformance suite, with blobs published by a conditional put exactly as on S3; and a store round
trip through ``az://`` location strings configured from the environment (writer, reader, verify,
gc, ``tensorcas ls`` and ``cp`` to and from a directory).  Skipped when Azurite is not
installed."""

from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner

import tensorcas
from azfixtures import CONTAINER, AzureServer
from s3fixtures import FAST_RETRY
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas.backends.base import Backend
from tensorcas.backends.objectstore import ObjectStoreBackend
from tensorcas.cli import cli
from tensorcas.errors import BucketNotFoundError, StoreNotFoundError
from tensorcas.store import open_backend
from tensorcas.testing import BackendTests


class TestAzureBackend(BackendTests):
    @pytest.fixture
    def backend(self, azure_server: AzureServer, az_url: str) -> Backend:
        backend = ObjectStoreBackend.from_url(az_url, azure_server.options(), retry=FAST_RETRY)
        from obstore.store import AzureStore

        # The container as it is, without the backend, for the raw hooks.
        backend.raw = AzureStore(  # type: ignore[attr-defined]
            CONTAINER,
            prefix=az_url.split("/", 3)[3],
            **azure_server.options(),
            client_options={"allow_http": True},
        )
        return backend

    def raw_get(self, backend: Backend, key: str) -> bytes | None:
        import obstore

        raw = backend.raw  # type: ignore[attr-defined]
        try:
            return bytes(obstore.get(raw, key).bytes())
        except FileNotFoundError:
            pass
        names = sorted(m["path"] for batch in obstore.list(raw, prefix=f"{key}.seg") for m in batch)
        return b"".join(bytes(obstore.get(raw, n).bytes()) for n in names) if names else None

    def raw_put(self, backend: Backend, key: str, data: bytes) -> None:
        import obstore

        obstore.put(backend.raw, key, data)  # type: ignore[attr-defined]


def test_a_store_on_azure_through_url_strings(az_env, tmp_path):
    big = torch.randn(300_000)
    with ContentStoreWriter(az_env) as writer:
        writer.write_tensor("big", big)
        writer.write_tensor("small", torch.ones(3))
        writer.write_tensor("gone", torch.full((20_000,), 3.0))
    with ContentStoreWriter(az_env) as writer:  # a second writer: the blob is found, not sent
        writer.write_tensor("big_again", big.clone())
    reader = ContentStoreReader(az_env, verify=True)
    assert torch.equal(reader.read_tensor("big_again"), big)
    assert torch.equal(reader.read_tensor("small"), torch.ones(3))
    assert tensorcas.verify(az_env).ok
    tensorcas.rm(az_env, ["gone"])
    report = tensorcas.gc(az_env, grace_seconds=0)
    assert len(report.removed_blobs) == 1 and report.restored_trash == []
    assert sorted(ContentStoreReader(az_env).list_tensors()) == ["big", "big_again", "small"]
    keys = list(open_backend(az_env).list(""))
    assert not any(".gc-" in k for k in keys), keys

    runner = CliRunner()
    listed = runner.invoke(cli, ["ls", "--json", az_env])
    assert listed.exit_code == 0, listed.output
    assert sorted(r["name"] for r in json.loads(listed.output)) == ["big", "big_again", "small"]
    local = os.fspath(tmp_path / "local")
    pulled = runner.invoke(cli, ["cp", "--json", az_env, local])
    assert pulled.exit_code == 0, pulled.output
    assert torch.equal(ContentStoreReader(local, verify=True).read_tensor("big"), big)
    with ContentStoreWriter(local) as writer:
        writer.write_tensor("new", torch.arange(5.0))
    pushed = runner.invoke(cli, ["cp", "--json", local, az_env + "-copy"])
    assert pushed.exit_code == 0, pushed.output
    copy = ContentStoreReader(az_env + "-copy", verify=True)
    assert torch.equal(copy.read_tensor("new"), torch.arange(5.0))
    assert torch.equal(copy.read_tensor("big_again"), big)


def test_the_account_and_an_http_endpoint_from_the_environment(azure_server, az_url, monkeypatch):
    options = azure_server.options()
    monkeypatch.delenv("AZURE_STORAGE_USE_EMULATOR", raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", options["account_name"])
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", options["account_key"])
    monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", options["endpoint"])  # http://: plain HTTP allowed
    with ContentStoreWriter(az_url) as writer:
        writer.write_tensor("x", torch.arange(4.0))
    assert torch.equal(ContentStoreReader(az_url).read_tensor("x"), torch.arange(4.0))


def test_large_objects_go_in_blocks_published_only_if_absent(azure_server, az_url, monkeypatch):
    from tensorcas.backends.objectstore import backend as objectstore

    monkeypatch.setattr(objectstore, "MULTIPART_THRESHOLD", 1 << 20)
    monkeypatch.setattr(objectstore, "READ_PART_SIZE", 256 << 10)
    backend = ObjectStoreBackend.from_url(az_url, azure_server.options(), retry=FAST_RETRY)
    data = bytes(range(251)) * 12_000  # ~3 MB: uploaded in blocks, read in 12 ranges
    pieces = (memoryview(data)[i : i + 100_000] for i in range(0, len(data), 100_000))
    assert backend.put_if_absent("blobs/ab/big", pieces) is True
    assert backend.put_if_absent("blobs/ab/big", memoryview(data)) is False
    out = bytearray(len(data))
    assert backend.read_into("blobs/ab/big", memoryview(out)) == len(data) and out == data


@pytest.mark.parametrize("scheme", ["azure", "abfs"])
def test_the_other_azure_schemes_open_the_same_container(az_env, scheme):
    with ContentStoreWriter(az_env) as writer:
        writer.write_tensor("x", torch.arange(4.0))
    other = scheme + az_env[len("az") :]
    assert torch.equal(ContentStoreReader(other).read_tensor("x"), torch.arange(4.0))


def test_a_missing_container_and_a_missing_store(az_env):
    with pytest.raises(BucketNotFoundError, match="no-such-container") as info:
        ContentStoreReader("az://no-such-container/p")
    assert isinstance(info.value, FileNotFoundError) and info.value.__cause__ is not None
    with pytest.raises(StoreNotFoundError):
        ContentStoreReader(az_env)
    with pytest.raises(BucketNotFoundError, match="no-such-container"):
        ContentStoreWriter("az://no-such-container/p")
