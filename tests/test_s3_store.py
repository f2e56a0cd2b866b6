"""A store on S3 (moto's server on loopback) works like a local one: the writer, the reader, the
operator, verify, gc and the command line, through ``s3://`` location strings."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

import tensorcas
from s3fixtures import BUCKET, FAST_RETRY, S3Server
from tensorcas import ContentStoreReader, ContentStoreWriter, gc, verify
from tensorcas.backends.objectstore import MULTIPART_THRESHOLD, ObjectStoreBackend
from tensorcas.cli import cli
from tensorcas.errors import BucketNotFoundError, StoreNotFoundError, UnsupportedLocationError


def _keys(s3: S3Server, url: str) -> list[str]:
    prefix = url.split("/", 3)[3] + "/"
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", [])]


def test_a_store_on_s3_through_url_strings(s3_env, s3_server, tmp_path):
    big = torch.randn(MULTIPART_THRESHOLD // 4 + 1000)  # multipart upload, parallel ranged reads
    base = torch.arange(1000, dtype=torch.float32)
    with ContentStoreWriter(s3_env) as writer:
        writer.write_tensor("big", big)
        writer.write_tensor("w", base)
        writer.write_tensor("w_t", base.view(20, 50).t())
        writer.write_tensor("gone", torch.full((20_000,), 3.0))
        writer.write_tensor("small", torch.ones(3))
    with ContentStoreWriter(s3_env) as writer:  # a second writer: dedupe across runs
        writer.write_tensor("small_again", torch.ones(3))
        writer.write_tensor("big_again", big.clone())
        writer.delete_tensor("gone")
    reader = ContentStoreReader(s3_env)
    assert set(reader.list_tensors()) == {"big", "w", "w_t", "small", "small_again", "big_again"}
    assert torch.equal(reader.read_tensor("big"), big)
    got = reader.read_tensor("w_t")
    assert torch.equal(got, base.view(20, 50).t()) and got.stride() == (1, 50)
    assert torch.equal(reader.read_tensor("small_again"), torch.ones(3))
    keys = _keys(s3_server, s3_env)
    assert not any(k.startswith("s3:") for k in keys) and not os.path.exists("s3:")
    # The big storage is one object; no segment is visible as a key of the store.
    assert sum(k.startswith("blobs/") for k in keys) == 2  # big, gone (small ones are packed)
    assert ".seg/" not in "".join(ContentStoreReader(s3_env).store.backend.list(""))
    with tensorcas.load_tensor_reader(s3_env):
        assert torch.equal(
            torch.ops.tensorcas.load_tensor(
                "small", (3,), (1,), dtype=torch.float32, device=torch.device("cpu")
            ),
            torch.ones(3),
        )
    assert verify(s3_env).ok
    report = gc(s3_env, grace_seconds=0)
    assert [b.size for b in report.removed_blobs] == [80_000]  # the deleted tensor's blob
    assert verify(s3_env).ok
    assert torch.equal(ContentStoreReader(s3_env).read_tensor("big_again"), big)
    assert not any(".gc-" in k for k in _keys(s3_server, s3_env))


def test_explicit_storage_options_and_a_backend_object(s3_server, s3_url, monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    backend = ObjectStoreBackend.from_url(s3_url, s3_server.options(), retry=FAST_RETRY)
    with ContentStoreWriter(backend) as writer:
        writer.write_tensor("x", torch.arange(5))
    same = tensorcas.store.open_backend(s3_url, storage_options=s3_server.options())
    assert torch.equal(ContentStoreReader(same).read_tensor("x"), torch.arange(5))


def test_anonymous_reads_of_a_public_bucket(s3_server):
    client = s3_server.client()
    client.create_bucket(Bucket="tensorcas-public")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject", "s3:ListBucket", "s3:HeadObject"],
                "Resource": ["arn:aws:s3:::tensorcas-public", "arn:aws:s3:::tensorcas-public/*"],
            }
        ],
    }
    # moto checks an anonymous HEAD against "s3:HeadObject" (AWS against s3:GetObject).
    client.put_bucket_policy(Bucket="tensorcas-public", Policy=json.dumps(policy))
    url = "s3://tensorcas-public/shared"
    with ContentStoreWriter(ObjectStoreBackend.from_url(url, s3_server.options())) as writer:
        writer.write_tensor("x", torch.arange(5))
    options = {
        k: v
        for k, v in s3_server.options().items()
        if k not in ("access_key_id", "secret_access_key")
    }
    anonymous = ObjectStoreBackend.from_url(url, {**options, "anon": True})
    assert torch.equal(ContentStoreReader(anonymous).read_tensor("x"), torch.arange(5))


@pytest.mark.parametrize(
    "location",
    ["foo://x", "s3x://bucket/p", "http://example.com/store", "s3:///nobucket", "s3:bucket/p"],
)
def test_an_unknown_scheme_is_refused_never_taken_for_a_directory(location, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsupportedLocationError, match="location"):
        ContentStoreWriter(location)
    with pytest.raises(UnsupportedLocationError):
        ContentStoreReader(location)
    assert os.listdir(tmp_path) == []


def test_a_missing_bucket_and_a_missing_store(s3_server, s3_env):
    with pytest.raises(BucketNotFoundError, match="bucket") as info:
        ContentStoreReader("s3://no-such-bucket-here/p")
    assert isinstance(info.value, FileNotFoundError) and info.value.__cause__ is not None
    with pytest.raises(StoreNotFoundError):
        ContentStoreReader(s3_env)


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_every_command_works_on_urls(s3_env, s3_server, tmp_path):
    local = os.fspath(tmp_path / "local")
    with ContentStoreWriter(s3_env) as writer:
        writer.write_tensor("model/w", torch.arange(6, dtype=torch.float32))
        writer.write_tensor("model/b", torch.zeros(2))
    with ContentStoreWriter(local) as writer:
        writer.write_tensor("model/w", torch.arange(6, dtype=torch.float32))
        writer.write_tensor("model/b", torch.ones(2))
    out = tmp_path / "out.safetensors"
    script = [
        ("ls", "--json", s3_env),
        ("show", s3_env, "model/w"),
        ("du", s3_env),
        ("diff", "--json", s3_env, local),
        ("diff", f"{s3_env}:model/", f"{local}:model/"),
        ("verify", s3_env),
        ("export", s3_env, os.fspath(out)),
        ("import", s3_env + "-imported", os.fspath(out)),
        ("rm", s3_env, "model/b"),
        ("gc", "--grace", "0", s3_env),
        ("ls", s3_env),
    ]
    results = {args[0] + str(i): _cli(*args) for i, args in enumerate(script)}
    failed = {k: r.output for k, r in results.items() if r.exit_code not in (0, 1)}
    assert not failed
    assert [r["name"] for r in json.loads(results["ls0"].output)] == ["model/w", "model/b"]
    diff = json.loads(results["diff3"].output)
    assert results["diff3"].exit_code == 1 and "model/b" in json.dumps(diff)
    assert results["verify5"].exit_code == 0
    assert "model/w" in results["ls10"].output and "model/b" not in results["ls10"].output
    imported = ContentStoreReader(s3_env + "-imported")
    assert torch.equal(imported.read_tensor("model/w"), torch.arange(6, dtype=torch.float32))
    refused = _cli("ls", "foo://x")
    assert refused.exit_code == 2 and "foo://x" in refused.output and not os.path.exists("foo:")


def test_the_readme_store_on_s3_runs(s3_env, capsys):
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("## Object storage", 1)[1]
    block = re.search(r"```py\n(.*?)```", section, re.S)
    assert block is not None and len(block.group(1).strip().splitlines()) == 3
    code = block.group(1).replace("s3://my-bucket/dumps", s3_env)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert "tensor([1., 1., 1.])" in capsys.readouterr().out


def test_credentials_from_a_named_profile(s3_env, s3_server, tmp_path, monkeypatch):
    pytest.importorskip("boto3")
    from s3proxy import FaultProxy

    (tmp_path / "credentials").write_text(
        "[tc-test]\naws_access_key_id = PROFILEKEY\naws_secret_access_key = profilesecret\n"
    )
    (tmp_path / "config").write_text("[profile tc-test]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.fspath(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", os.fspath(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "tc-test")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)
    with FaultProxy(s3_server.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        with ContentStoreWriter(s3_env) as writer:
            writer.write_tensor("x", torch.arange(3))
        assert proxy.access_keys == {"PROFILEKEY"}


def test_opening_and_listing_cost_requests_per_log_not_per_tensor(s3_server, s3_url):
    from s3proxy import FaultProxy

    direct = ObjectStoreBackend.from_url(s3_url, s3_server.options())
    for writer_number in range(2):
        with ContentStoreWriter(direct) as writer:
            for i in range(40):
                writer.write_tensor(f"w{writer_number}/t{i}", torch.full((8,), float(i)))
    with FaultProxy(s3_server.endpoint) as proxy:
        counted = tensorcas.store.open_backend(s3_url, storage_options=s3_server.options(proxy.endpoint))
        names = ContentStoreReader(counted).list_tensors()
        assert len(names) == 80
        # The marker; then, for each time the reader reads the logs again (opening, listing):
        # one listing of the logs, and a look at and a read of each of the 2 logs (closed logs
        # are one object each, whatever the number of records).  Nothing about tensors.
        logs = 2
        assert proxy.count() <= 1 + 2 * (1 + 2 * logs), proxy.requests
        assert not any("/blobs/" in path or "/packs/" in path for _, path, _ in proxy.requests)
