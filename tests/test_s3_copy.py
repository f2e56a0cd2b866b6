"""``tensorcas cp``: a store copied between a directory and S3, sending only the blobs the target
lacks; damaged source bytes are never stored."""

from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner

from s3fixtures import S3Server
from s3proxy import FaultProxy
from tensorcas import ContentStoreReader, ContentStoreWriter, verify
from tensorcas.backends.objectstore import ObjectStoreBackend
from tensorcas.cli import cli
from tensorcas.errors import StoreNotFoundError
from tensorcas.maintenance import copy_store


def test_cp_pushes_and_pulls_sending_only_what_is_lacking(s3_env, s3_server: S3Server, tmp_path):
    local = os.fspath(tmp_path / "local")
    tensors = {"a": torch.randn(30_000), "b": torch.arange(10.0), "c": torch.randn(30_000)}
    with ContentStoreWriter(local) as writer:
        for name, tensor in tensors.items():
            writer.write_tensor(name, tensor)
        digest = writer.write_storage(torch.ones(5).untyped_storage())
    result = CliRunner().invoke(cli, ["cp", "--json", local, s3_env])
    assert result.exit_code == 0, result.output
    first = json.loads(result.output)
    assert (
        first["blobs_sent"] == 4
        and first["roots"] == 1
        and sorted(first["copied"]) == ["a", "b", "c"]
    )
    reader = ContentStoreReader(s3_env, verify=True)
    for name, tensor in tensors.items():
        assert torch.equal(reader.read_tensor(name), tensor)
    assert digest in reader.store.roots()
    assert verify(s3_env).ok

    # Again, through a proxy that counts: nothing is sent, no record is written.
    with FaultProxy(s3_server.endpoint) as proxy:
        counted = ObjectStoreBackend.from_url(s3_env, s3_server.options(proxy.endpoint))
        again = copy_store(local, counted)
        assert again.copied == [] and again.unchanged == 3 and again.blobs_sent == 0
        assert proxy.body_bytes("PUT") == 0

    # One tensor changes locally: only its blob travels.
    with ContentStoreWriter(local) as writer:
        writer.write_tensor("c", torch.zeros(30_000))
        writer.write_tensor("d", torch.randn(30_000))
    third = copy_store(local, s3_env)
    assert sorted(third.copied) == ["c", "d"] and third.blobs_sent == 2

    # And back: a new local store from S3.
    pulled = os.fspath(tmp_path / "pulled")
    result = CliRunner().invoke(cli, ["cp", s3_env, pulled])
    assert result.exit_code == 0, result.output
    assert ContentStoreReader(pulled).list_tensors() == ContentStoreReader(s3_env).list_tensors()
    assert torch.equal(ContentStoreReader(pulled).read_tensor("c"), torch.zeros(30_000))
    assert verify(pulled).ok


def test_cp_never_stores_damaged_bytes(s3_env, tmp_path):
    local = os.fspath(tmp_path / "local")
    with ContentStoreWriter(local) as writer:
        writer.write_tensor("big", torch.randn(30_000))
        writer.write_tensor("ok", torch.ones(3))
    record = ContentStoreReader(local).store.get_record("big")
    blob = os.path.join(local, "blobs", record.blob[7:9], record.blob[9:])
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff\xff\xff")
    result = CliRunner().invoke(cli, ["cp", local, s3_env])
    assert result.exit_code == 2 and "damaged" in result.output
    reader = ContentStoreReader(s3_env)
    assert "big" not in reader.list_tensors()
    assert reader.store.blobs.locate(record.blob) is None


def test_cp_dry_run_changes_nothing(s3_env, tmp_path):
    local = os.fspath(tmp_path / "local")
    with ContentStoreWriter(local) as writer:
        writer.write_tensor("a", torch.randn(30_000))
        writer.write_tensor("b", torch.ones(3))
    planned = copy_store(local, s3_env, dry_run=True)  # to a store that does not exist yet
    assert (
        sorted(planned.copied) == ["a", "b"]
        and planned.blobs_sent == 2
        and planned.target == s3_env
    )
    result = CliRunner().invoke(cli, ["cp", "--dry-run", local, s3_env])
    assert result.exit_code == 0 and "would copy 2 tensors" in result.output
    with pytest.raises(StoreNotFoundError):
        ContentStoreReader(s3_env)
    copy_store(local, s3_env)
    again = copy_store(local, s3_env, dry_run=True)
    assert again.copied == [] and again.unchanged == 2 and again.blobs_sent == 0
