"""torch.distributed.checkpoint on a store in an S3 bucket (moto's server on loopback).

The same storage layer as on a local directory: ranks in processes of their own save shards of
one checkpoint into the bucket, a checkpoint that a dead rank left unfinished is not listed, and
a series of checkpoints stores each byte once.
"""

from __future__ import annotations

import os

import pytest
import torch

import tensorcas
from tensorcas.maintenance import list_checkpoints, remove_checkpoints

dist = pytest.importorskip("torch.distributed")

import dcp_workers  # noqa: E402  (tests/ is on sys.path)


def test_a_fine_tuning_series_on_s3_stores_each_byte_once(s3_env):
    loc = s3_env
    torch.manual_seed(0)
    base = {f"layer{i}.weight": torch.randn(128, 256) for i in range(3)}  # 384 KiB, frozen
    saved = []
    for step in range(3):
        sd = {"model": {**base, "head": torch.full((64, 64), float(step))}, "step": step}
        tensorcas.save_state_dict(loc, f"step-{step}", sd)
        saved.append(sd)
    for step, sd in enumerate(saved):
        got = tensorcas.load_state_dict(loc, f"step-{step}")
        assert got["step"] == step
        for key, tensor in sd["model"].items():
            assert torch.equal(got["model"][key], tensor), key
    listing = list_checkpoints(loc)
    assert [c.name for c in listing.checkpoints] == ["step-0", "step-1", "step-2"]
    base_bytes = sum(t.nbytes for t in base.values())
    assert listing.checkpoints[-1].shared_bytes >= base_bytes
    assert listing.stored_bytes < base_bytes + 3 * (64 * 64 * 4 + 8192)  # the base once
    remove_checkpoints(loc, keep_last=1)
    freed = tensorcas.gc(loc, grace_seconds=0).bytes_freed
    assert 0 < freed < base_bytes  # the old heads and manifests, never the shared base
    got = tensorcas.load_state_dict(loc, "step-2")
    assert all(torch.equal(got["model"][k], v) for k, v in saved[2]["model"].items())
    assert tensorcas.verify(loc).ok


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="no torch.distributed with gloo"
)
def test_ranks_in_processes_save_shards_to_s3_and_load_them_resharded(
    s3_server, s3_url, tmp_path, monkeypatch
):
    """Two gloo ranks train an FSDP2 model and save three checkpoints into the bucket (the third
    with async_save), load each on one rank, then start a save during which rank 1 dies."""
    ref = tmp_path / "ref"
    ref.mkdir()
    results = dcp_workers.run_ranks(
        2,
        dcp_workers.save_series,
        s3_url,
        os.fspath(ref),
        1,
        "fsdp",
        env=s3_server.env(),
        timeout_s=60.0,
        wait_s=240.0,
    )
    assert 0 in results, "rank 0 did not report"
    for rank, (status, value) in results.items():
        assert status == "ok", f"rank {rank}:\n{value}"
        assert value["mismatches"] == []
        assert value["doomed"].startswith("failed")
    assert 1 not in results  # died in the last save
    for name, value in s3_server.env().items():  # this process reads the bucket as ranks did
        monkeypatch.setenv(name, value)
    for step in (1, 2, 3):
        want = torch.load(ref / f"step-{step}.pt", weights_only=True)
        got = tensorcas.load_state_dict(s3_url, f"step-{step}")
        assert dcp_workers.compare(want, got, f"step-{step}") == []
    listing = list_checkpoints(s3_url)
    assert [c.name for c in listing.checkpoints] == ["step-1", "step-2", "step-3"]
    assert [s.name for s in listing.incomplete] == ["doomed"]
    assert tensorcas.verify(s3_url).ok


def test_a_process_keeps_its_s3_store_open_and_reads_only_new_logs(s3_env, s3_server):
    """Saves of one process reuse the store they opened: the next save reads the logs appended
    since, not every earlier checkpoint's (a request per log).  A store removed meanwhile is
    opened afresh."""
    from tensorcas.dcp import opened

    loc = s3_env
    sd = {"w": torch.arange(4096.0), "b": torch.ones(3)}
    for step in range(3):
        sd["b"].add_(1)
        tensorcas.save_state_dict(loc, f"step-{step}", sd)
    store = opened.open_store(loc)
    earlier = set(store.log.log_keys())
    assert len(earlier) == 3  # one closed log per save: writers are not kept on object storage
    read: list[tuple[str, int]] = []
    backend = store.backend
    real = backend.read_range

    def counting(key, offset, nbytes):
        read.append((key, offset))
        return real(key, offset, nbytes)

    backend.read_range = counting  # type: ignore[method-assign]
    try:
        tensorcas.save_state_dict(loc, "step-3", sd)
    finally:
        del backend.read_range
    assert opened.open_store(loc) is store
    # At most what was appended to an earlier log since (a closing writer's last lines).
    assert not [key for key, offset in read if key in earlier and offset == 0], read
    # Removed (every object under the prefix) and made again: opened afresh, nothing stale.
    client = s3_server.client()
    bucket, prefix = loc[len("s3://"):].split("/", 1)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    tensorcas.save_state_dict(loc, "step-0", sd)  # not "already exists"
    assert opened.open_store(loc) is not store
    assert [c.name for c in list_checkpoints(loc).checkpoints] == ["step-0"]
    assert torch.equal(tensorcas.load_state_dict(loc, "step-0")["b"], sd["b"])
