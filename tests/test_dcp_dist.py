"""torch.distributed.checkpoint on tensorcas across processes: gloo on loopback, CPU only.

One run of 4 ranks (parameters sharded by hand with DTensor) and one of 2 (sharded by FSDP2's
``fully_shard``), started from a fork server that imported torch once, train a small model and
save three checkpoints each (the third with ``async_save``), load
each on fewer ranks and compare bit for bit, then start a save during which rank 1 dies.  The tests
below check what those runs left: the results each rank reported, and the store itself, read
here in one process.
"""

from __future__ import annotations

import os

import pytest
import torch

import tensorcas
from tensorcas.dcp.catalog import read_manifest
from tensorcas.maintenance import list_checkpoints

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import dcp_workers  # noqa: E402  (tests/ is on sys.path)


def _run(tmp_path_factory, world: int, load_ranks: int, kind: str):
    root = tmp_path_factory.mktemp(f"dcp{world}")
    loc, ref = os.fspath(root / "store"), root / "ref"
    ref.mkdir()
    results = dcp_workers.run_ranks(
        world, dcp_workers.save_series, loc, os.fspath(ref), load_ranks, kind
    )
    return loc, ref, results


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    return _run(tmp_path_factory, 4, 2, "dtensor")


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return _run(tmp_path_factory, 2, 1, "fsdp")


def _reference(ref, name):
    return torch.load(ref / f"{name}.pt", weights_only=True)  # written by the test's own rank 0


@pytest.mark.parametrize("run", ["four", "two"])
def test_every_surviving_rank_saved_and_loaded_bit_exact(run, request):
    _, _, results = request.getfixturevalue(run)
    assert 0 in results, "rank 0 did not report"
    for rank, (status, value) in results.items():
        assert status == "ok", f"rank {rank}:\n{value}"
        assert value["mismatches"] == []
    # Rank 1 died in the last save: it reports nothing; the others saw the save fail.
    assert 1 not in results
    assert all(value["doomed"].startswith("failed") for _, value in results.values())


@pytest.mark.parametrize("run", ["four", "two"])
def test_killed_rank_leaves_no_checkpoint_and_keeps_the_earlier_ones(run, request):
    loc, ref, _ = request.getfixturevalue(run)
    # Saved on 4 (or 2) ranks in shards, loaded whole in one process without torch.distributed;
    # step 3 was saved with async_save while training went on.
    for step in (1, 2, 3):
        got = tensorcas.load_state_dict(loc, f"step-{step}")
        assert dcp_workers.compare(_reference(ref, f"step-{step}"), got, f"step-{step}") == []
    listing = list_checkpoints(loc)
    assert [c.name for c in listing.checkpoints] == ["step-1", "step-2", "step-3"]
    assert all(c.problem is None for c in listing.checkpoints)
    # What the dead save wrote is visible as an incomplete save, not as a checkpoint.
    assert [s.name for s in listing.incomplete] == ["doomed"]
    with pytest.raises(tensorcas.CheckpointNotFoundError):
        tensorcas.load_state_dict(loc, "doomed")
    assert tensorcas.verify(loc).ok


@pytest.mark.parametrize("run", ["four", "two"])
def test_identical_shards_are_one_blob_across_ranks_and_checkpoints(run, request):
    """Every rank's shard of the frozen tensor holds the same bytes, in all three checkpoints:
    the store holds them once, and only the first checkpoint counts them as new."""
    loc, _, _ = request.getfixturevalue(run)
    reader = tensorcas.ContentStoreReader(loc)
    manifests = [read_manifest(reader, f"step-{step}") for step in (1, 2, 3)]
    frozen = [c for m in manifests for c in m.entries["frozen"].chunks]
    assert len(frozen) == 3 * (4 if run == "four" else 2)
    assert len({c.blob for c in frozen}) == 1
    listing = list_checkpoints(loc)
    assert listing.checkpoints[1].shared_bytes >= frozen[0].nbytes
    # Nothing is counted twice: the checkpoints' new bytes add up to the distinct blobs they use.
    used = {}
    for m in manifests:
        used.update(m.blobs())
    manifest_bytes = sum(
        reader.read_tensor_metadata(f"checkpoints/step-{s}").nbytes for s in (1, 2, 3)
    )
    assert listing.stored_bytes == sum(used.values()) + manifest_bytes
