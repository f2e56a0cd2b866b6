"""Checkpoints in one process: tensorcas.save_state_dict/load_state_dict, DCP's save and load with
tensorcas.dcp's Writer and Reader (no_dist), the manifest's validation, listing and removal."""

from __future__ import annotations

import _pickle
import io
import json
import math
import os
import pickle
import shutil
import sys
import warnings

import pytest
import torch
import torch.distributed.checkpoint as dcp
from click.testing import CliRunner
from torch.distributed.checkpoint.api import CheckpointException

import tensorcas
from tensorcas import (
    CheckpointError,
    CheckpointNotFoundError,
    ContentStoreReader,
    ContentStoreWriter,
)
from tensorcas.cli import cli
from tensorcas.dcp import Reader, Writer
from tensorcas.dcp.catalog import read_manifest
from tensorcas.errors import CorruptObjectError, InvalidNameError
from tensorcas.maintenance import list_checkpoints, remove_checkpoints


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_same(want, got, where="sd"):
    """Nested equality, tensors bit for bit (NaN included), containers of the same type."""
    assert type(got) is type(want) or (
        isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor)
    ), where
    if isinstance(want, dict):
        assert list(got) == list(want), where
        for k in want:
            assert_same(want[k], got[k], f"{where}.{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(want, got)):
            assert_same(a, b, f"{where}.{i}")
    elif isinstance(want, torch.Tensor):
        assert (got.dtype, got.shape) == (want.dtype, want.shape), where
        assert torch.equal(_bits(want), _bits(got)), where
    elif isinstance(want, io.BytesIO):
        assert got.getvalue() == want.getvalue(), where
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got), where
    else:
        assert got == want, where


def _everything() -> dict:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "model": {
            "w": base,
            "w_t": base.t(),  # a view over the whole storage: kept as a view
            "row": base[1],  # a view of part of a storage: only its elements are stored
            "bf16": torch.randn(3, 5).to(torch.bfloat16),
            "empty": torch.zeros(0, 3),
            "scalar": torch.tensor(2.5, dtype=torch.float64),
            "mask": torch.tensor([True, False, True]),
            "nan": torch.tensor([float("nan"), -0.0]),
        },
        "optim": {
            "state": {"w": {"step": torch.tensor(3.0), "exp_avg": torch.ones(4, 6)}},
            "param_groups": [
                {
                    "lr": 1e-3,
                    "betas": (0.9, 0.999),
                    "eps": float("inf"),
                    "params": ["w"],
                    "amsgrad": False,
                }
            ],
        },
        "values": {
            "none": None,
            "big": 2**70,
            "neg": -5,
            "nan": float("nan"),
            "text": "héllo\x00",
            "raw": b"\x00\xff",
            "buf": bytearray(b"ab"),
            "stream": io.BytesIO(b"state of a data loader"),
            "shape": torch.Size([2, 3]),
            "dtype": torch.float16,
            "table": ({1: "one", (2, 3): [4.5, None]},),  # a tuple is kept whole, dict keys too
            "nested": [[1, 2], ("a", {"b": b"c"})],
        },
        "mixed": [torch.ones(2), 3, "x"],
        "step": 7,
    }


def test_roundtrip_everything(loc):
    sd = _everything()
    tensorcas.save_state_dict(loc, "step-1", sd)
    assert_same(sd, tensorcas.load_state_dict(loc, "step-1"))
    # The partial view was saved as its own three elements, not the 24 of its storage.
    manifest = read_manifest(ContentStoreReader(loc), "step-1")
    (chunk,) = manifest.entries["model.row"].chunks
    assert chunk.nbytes == 6 * 4


def test_loaded_tensors_do_not_share_storage(loc):
    tensorcas.save_state_dict(loc, "c", {"a": torch.zeros(100), "b": torch.zeros(100)})
    out = tensorcas.load_state_dict(loc, "c")
    out["a"].add_(1)
    assert out["b"].sum() == 0


def _trip(*args, **kwargs):
    raise AssertionError("something unpickled while loading a checkpoint")


def test_dcp_load_into_a_state_dict_unpickles_nothing(loc, monkeypatch):
    sd = _everything()
    tensorcas.save_state_dict(loc, "step-1", sd)
    target = _everything()
    for t in (
        target["model"]["w"],
        target["model"]["bf16"],
        target["optim"]["state"]["w"]["exp_avg"],
    ):
        t.zero_()
    target["values"]["text"] = ""
    target["values"]["table"] = None
    for module, name in (
        (pickle, "loads"),
        (pickle, "load"),
        (_pickle, "loads"),
        (_pickle, "load"),
    ):
        monkeypatch.setattr(module, name, _trip)
    monkeypatch.setattr(torch, "load", _trip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(target, storage_reader=Reader(loc, "step-1"), no_dist=True)
    monkeypatch.undo()
    assert_same(sd["values"], target["values"])
    assert_same(sd["optim"], target["optim"])
    assert torch.equal(target["model"]["w"], sd["model"]["w"])
    assert torch.equal(_bits(target["model"]["bf16"]), _bits(sd["model"]["bf16"]))


def test_checkpoint_id_names_the_checkpoint(loc):
    writer = Writer(loc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"x": torch.ones(3)}, checkpoint_id="from-id", storage_writer=writer, no_dist=True)
        assert writer.storage_meta().checkpoint_id == "from-id"
        target = {"x": torch.zeros(3)}
        reader = Reader(loc)
        dcp.load(target, checkpoint_id="from-id", storage_reader=reader, no_dist=True)
    assert torch.equal(target["x"], torch.ones(3))
    assert not Writer.validate_checkpoint_id("/a/path") and Writer.validate_checkpoint_id("step-3")


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", "x" * 129, "sp ace", "é"])
def test_bad_checkpoint_names(loc, name):
    with pytest.raises(InvalidNameError):
        tensorcas.save_state_dict(loc, name, {"x": torch.ones(1)})


class _Opaque:
    pass


def test_a_value_that_needs_pickle_is_refused_and_nothing_is_listed(loc):
    tensorcas.save_state_dict(loc, "good", {"x": torch.ones(2)})
    with pytest.raises(CheckpointError, match="without pickle"):
        tensorcas.save_state_dict(loc, "bad", {"x": torch.ones(2), "obj": _Opaque()})
    with pytest.raises(CheckpointError, match="tensor inside"):
        tensorcas.save_state_dict(loc, "bad", {"pair": (torch.ones(1), 2)})
    assert [c.name for c in list_checkpoints(loc).checkpoints] == ["good"]


def test_existing_name_is_refused_unless_overwrite(loc):
    tensorcas.save_state_dict(loc, "c", {"x": torch.ones(4), "y": torch.zeros(4)})
    names_before = ContentStoreReader(loc).list_tensors()
    stored_before = tensorcas.du(loc).stored_bytes
    with pytest.raises(CheckpointError, match="already exists"):
        tensorcas.save_state_dict(loc, "c", {"x": torch.full((4,), 2.0), "z": torch.randn(1 << 20)})
    # Refused before anything was written: no chunk names, no bytes.
    assert ContentStoreReader(loc).list_tensors() == names_before
    assert tensorcas.du(loc).stored_bytes == stored_before
    assert torch.equal(tensorcas.load_state_dict(loc, "c")["x"], torch.ones(4))
    tensorcas.save_state_dict(
        loc, "c", {"x": torch.full((4,), 2.0), "y": torch.zeros(4)}, overwrite=True
    )
    assert torch.equal(tensorcas.load_state_dict(loc, "c")["x"], torch.full((4,), 2.0))
    # The replaced save's chunk names are gone; only the new save's remain.
    names = ContentStoreReader(loc).list_tensors("checkpoints/c/")
    assert len(names) == 2 and len({n.split("/")[2] for n in names}) == 1
    assert list_checkpoints(loc).incomplete == []


def test_missing_checkpoint(loc):
    tensorcas.save_state_dict(loc, "c", {"x": torch.ones(1)})
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint 'd'") as info:
        tensorcas.load_state_dict(loc, "d")
    assert isinstance(info.value, FileNotFoundError) and isinstance(
        info.value, tensorcas.StoreError
    )
    with pytest.raises(CheckpointNotFoundError):
        tensorcas.load_state_dict(loc + "-nothing-here", "c")


def test_durable_saves(loc, monkeypatch):
    """On a local store a durable save syncs the filesystem once per rank and once more for the
    manifest; where that is not possible (here: another backend) every write is fsynced instead.
    Both load back."""
    import tensorcas.dcp.durable as durable

    synced = []
    real = durable.sync_filesystem
    monkeypatch.setattr(durable, "sync_filesystem", lambda w: synced.append(w.location) or real(w))
    tensorcas.save_state_dict(loc, "d", {"x": torch.arange(4.0)}, durable=True)
    assert synced == [os.path.abspath(loc)] * 2
    assert torch.equal(tensorcas.load_state_dict(loc, "d")["x"], torch.arange(4.0))
    mem = tensorcas.backends.MemoryBackend()
    tensorcas.save_state_dict(mem, "d", {"x": torch.arange(4.0)}, durable=True)
    assert len(synced) == 2
    assert torch.equal(tensorcas.load_state_dict(mem, "d")["x"], torch.arange(4.0))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs is Linux's")
def test_early_writeback_syncs_while_in_use_and_stops(loc, monkeypatch):
    import threading
    import time

    import tensorcas.dcp.durable as durable

    real = durable._syncfs()
    calls = []
    monkeypatch.setattr(durable, "_syncfs", lambda: lambda fd: calls.append(fd) or real(fd))
    writer = ContentStoreWriter(loc)
    try:
        assert durable.can_sync_filesystem(writer)
        with durable.EarlyWriteback(writer):
            time.sleep(0.05)
        made = len(calls)
        assert made >= 1
        assert not any(t.name == "tensorcas-writeback" for t in threading.enumerate())
        time.sleep(0.03)
        assert len(calls) == made  # stopped with the block
    finally:
        writer.close()


def test_memory_backend(loc):
    mem = tensorcas.backends.MemoryBackend()
    tensorcas.save_state_dict(mem, "c", {"x": torch.arange(5)})
    assert torch.equal(tensorcas.load_state_dict(mem, "c")["x"], torch.arange(5))


# -- a fine-tuning series: the store grows by the bytes that changed -------------------------------


def test_chunks_that_are_views_store_only_their_own_elements(loc):
    """Parameters that are views into one flat buffer (as some trainers keep them) are each
    stored as their own elements, alongside ordinary large chunks, and load back."""
    torch.manual_seed(0)
    flat = torch.randn(3 << 20)  # 12 MiB
    sd = {
        "a": flat[: 1 << 20].view(1024, 1024),
        "b": flat[1 << 20 : 3 << 20].view(2048, 1024),
        "big": torch.randn(1 << 20),
        "small": torch.arange(5.0),
    }
    tensorcas.save_state_dict(loc, "c", sd)
    back = tensorcas.load_state_dict(loc, "c")
    assert all(torch.equal(back[k], v) for k, v in sd.items())
    assert tensorcas.du(loc).stored_bytes < flat.nbytes + sd["big"].nbytes + (1 << 20)


def test_a_mostly_unchanged_series_of_large_chunks_stores_the_changed_bytes(loc):
    """Large chunks go through the batch that hashes ahead: unchanged ones are found stored,
    changed ones (also one changed without torch noticing) are stored again, each once."""
    torch.manual_seed(0)
    sd = {f"w{i}": torch.randn(1 << 18) for i in range(12)}  # 1 MiB each
    tensorcas.save_state_dict(loc, "s0", sd)
    stored = tensorcas.du(loc).stored_bytes
    sd["w3"].add_(1)
    sd["w9"].data.view(torch.int32)[7] ^= 1  # behind autograd's back
    tensorcas.save_state_dict(loc, "s1", sd)
    added = tensorcas.du(loc).stored_bytes - stored
    assert 2 << 20 < added < (2 << 20) + (64 << 10)  # two chunks and the manifest
    back = tensorcas.load_state_dict(loc, "s1")
    assert all(torch.equal(back[k], v) for k, v in sd.items())
    assert tensorcas.verify(loc).ok


def _stored(loc) -> int:
    usage = tensorcas.du(loc)
    return usage.stored_bytes


def test_fine_tuning_series_grows_by_the_changed_bytes(loc):
    torch.manual_seed(0)
    base = {f"layer{i}.weight": torch.randn(256, 256) for i in range(4)}  # 1 MiB, frozen
    adapter = {"lora_a": torch.zeros(256, 8), "lora_b": torch.zeros(8, 256)}  # 16 KiB, trained
    params = [torch.nn.Parameter(t) for t in adapter.values()]
    optim = torch.optim.Adam(params, lr=0.1)
    grows, changed = [], []
    before = 0
    for step in range(5):
        for p in params:
            p.grad = torch.randn_like(p)
        optim.step()
        sd = {
            "model": {**base, **dict(zip(adapter, params))},
            "optim": optim.state_dict(),
            "step": step,
        }
        tensorcas.save_state_dict(loc, f"step-{step}", sd)
        after = _stored(loc)
        grows.append(after - before)
        before = after
        manifest_bytes = (
            ContentStoreReader(loc).read_tensor_metadata(f"checkpoints/step-{step}").nbytes
        )
        # Adapters and both Adam moments changed (3 x 16 KiB), plus the manifest.
        changed.append(3 * 2 * 256 * 8 * 4 + manifest_bytes)
    logical = list_checkpoints(loc).checkpoints[0].logical_bytes
    assert grows[0] >= 4 * 256 * 256 * 4  # the first checkpoint stores the base
    for grow, change in zip(grows[1:], changed[1:]):
        assert grow <= 1.1 * change + 1024, (grows, changed)
        assert grow < logical / 10
    listing = list_checkpoints(loc)
    assert listing.checkpoints[-1].shared_bytes >= 4 * 256 * 256 * 4
    assert listing.stored_bytes < 1.5 * listing.checkpoints[0].stored_bytes


# -- listing, removal, gc ----------------------------------------------------------------------------


def test_remove_keep_last_and_gc(loc):
    shared = torch.randn(64, 1024)  # 256 KiB in every checkpoint
    for step in range(4):
        tensorcas.save_state_dict(
            loc, f"s{step}", {"shared": shared, "own": torch.full((64, 1024), float(step))}
        )
    report = remove_checkpoints(loc, keep_last=2, dry_run=True)
    assert report.removed == ["s0", "s1"] and len(list_checkpoints(loc).checkpoints) == 4
    listing = list_checkpoints(loc)
    exclusive = listing.checkpoints[0].exclusive_bytes + listing.checkpoints[1].exclusive_bytes
    remove_checkpoints(loc, keep_last=2)
    assert [c.name for c in list_checkpoints(loc).checkpoints] == ["s2", "s3"]
    assert ContentStoreReader(loc).list_tensors("checkpoints/s0") == []
    freed = tensorcas.gc(loc, grace_seconds=0).bytes_freed
    assert exclusive - 8192 <= freed <= exclusive  # own tensors and manifests, never the shared one
    assert_same(
        {"shared": shared, "own": torch.full((64, 1024), 3.0)}, tensorcas.load_state_dict(loc, "s3")
    )
    with pytest.raises(CheckpointNotFoundError):
        remove_checkpoints(loc, ["s0"])


def test_cli_ls_and_rm(loc):
    tensorcas.save_state_dict(loc, "a", {"x": torch.ones(1000)})
    tensorcas.save_state_dict(loc, "b", {"x": torch.ones(1000), "y": torch.zeros(10)})
    runner = CliRunner()
    result = runner.invoke(cli, ["checkpoints", "ls", loc])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["logical", "new", "shared", "exclusive", "tensors", "name"]
    assert lines[1].split()[-1] == "a" and lines[2].split()[-1] == "b"
    data = json.loads(runner.invoke(cli, ["checkpoints", "ls", loc, "--json"]).output)
    a, b = data["checkpoints"]
    assert a["logical_bytes"] == 4000 and b["shared_bytes"] == 4000 and a["shared_bytes"] == 4000
    assert b["new_bytes"] < 4000  # y and the manifest only
    result = runner.invoke(cli, ["checkpoints", "rm", loc, "a", "--dry-run"])
    assert result.exit_code == 0 and "would remove a" in result.output
    result = runner.invoke(cli, ["checkpoints", "rm", loc, "nope"])
    assert result.exit_code == 2 and "no checkpoint 'nope'" in result.output
    result = runner.invoke(cli, ["checkpoints", "rm", loc, "--keep-last", "1"])
    assert result.exit_code == 0 and "removed a" in result.output
    assert [
        c["name"]
        for c in json.loads(runner.invoke(cli, ["checkpoints", "ls", loc, "--json"]).output)[
            "checkpoints"
        ]
    ] == ["b"]


def test_export_a_sharded_checkpoint_to_safetensors(loc, tmp_path):
    from safetensors import safe_open

    sd = {
        "model": {"w": torch.randn(6, 4), "b": torch.arange(3, dtype=torch.int64)},
        "step": 5,
        "lr": 0.5,
    }
    tensorcas.save_state_dict(loc, "c", sd)
    out = tmp_path / "c.safetensors"
    result = CliRunner().invoke(cli, ["checkpoints", "export", loc, "c", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 2 tensors, 120 B, and 2 values" in result.output
    with safe_open(str(out), "pt") as f:
        assert sorted(f.keys()) == ["model.b", "model.w"]
        assert torch.equal(f.get_tensor("model.w"), sd["model"]["w"])
        assert json.loads(f.metadata()["tensorcas.values"]) == {"step": 5, "lr": 0.5}
    result = CliRunner().invoke(cli, ["checkpoints", "export", loc, "c", str(out)])
    assert result.exit_code == 2 and "exists" in result.output


# -- damaged and hostile manifests -------------------------------------------------------------------


def _manifest_doc(loc, name="c"):
    tensorcas.save_state_dict(loc, name, {"w": torch.ones(2, 3), "v": [1, 2], "n": {"k": 3}})
    data = ContentStoreReader(loc).read_tensor(f"checkpoints/{name}").numpy().tobytes()
    return json.loads(data)


def _plant(loc, doc_or_bytes, name="c"):
    data = doc_or_bytes if isinstance(doc_or_bytes, bytes) else json.dumps(doc_or_bytes).encode()
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor(
            f"checkpoints/{name}", torch.frombuffer(bytearray(data), dtype=torch.uint8)
        )


def _w(doc):
    return doc["entries"]["w"]


HOSTILE = {
    "not json": b"\x80abc",
    "nan": b'{"format": NaN}',
    "duplicate key": b'{"format":"tensorcas-checkpoint","format":"x"}',
    "deep": b"[" * 100000 + b"]" * 100000,
    "version 2": lambda d: d.update(version=2),
    "bool as int": lambda d: d.update(time=True),
    "other checkpoint": lambda d: d.update(checkpoint="other"),
    "extra key": lambda d: d.update(extra=1),
    "bad dtype": lambda d: _w(d).update(dtype="object"),
    "negative size": lambda d: _w(d).update(size=[-1, 3]),
    "huge size": lambda d: _w(d).update(size=[2**62, 2**62]),
    "chunk outside": lambda d: _w(d)["chunks"][0].update(offsets=[1, 0]),
    "chunk escapes": lambda d: _w(d)["chunks"][0].update(name="../../other/x"),
    "chunk absolute": lambda d: _w(d)["chunks"][0].update(name="/x"),
    "bad digest": lambda d: _w(d)["chunks"][0].update(blob="sha1:00"),
    "too few bytes": lambda d: _w(d)["chunks"][0].update(nbytes=4),
    "unknown kind": lambda d: d["entries"].update(w={"kind": "pickle"}),
    "unknown tag": lambda d: d["entries"]["v"].update(value={"pickle": "gASV"}),
    "bad base64": lambda d: d["entries"]["v"].update(value={"bytes": "!!"}),
    "unhashable key": lambda d: d["entries"]["v"].update(value={"dict": [[[1], 2]]}),
    "path clash": lambda d: d["paths"].update({"v": ["w", "x"]}),
    "path list index": lambda d: d["paths"].update({"v": ["v", 10**9]}),
    "path missing": lambda d: d["paths"].pop("w"),
    "path to unknown": lambda d: d["paths"].update({"zz": ["zz"]}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifest_is_refused_cleanly(loc, case):
    doc = _manifest_doc(loc)
    attack = HOSTILE[case]
    if callable(attack):
        attack(doc)
        _plant(loc, doc)
    else:
        _plant(loc, attack)
    with pytest.raises(CorruptObjectError):
        tensorcas.load_state_dict(loc, "c")
    with pytest.raises((CheckpointException, CorruptObjectError)), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load({"w": torch.zeros(2, 3)}, storage_reader=Reader(loc, "c"), no_dist=True)
    listing = list_checkpoints(loc)
    assert listing.checkpoints[0].problem is not None


def test_a_chunk_renamed_after_saving_is_an_error_not_other_data(loc):
    tensorcas.save_state_dict(loc, "c", {"w": torch.ones(3)})
    (chunk,) = read_manifest(ContentStoreReader(loc), "c").entries["w"].chunks
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor(chunk.name, torch.zeros(3))
    with pytest.raises(CorruptObjectError, match="not the manifest's"):
        tensorcas.load_state_dict(loc, "c")
    with ContentStoreWriter(loc) as writer:
        writer.delete_tensor(chunk.name)
    with pytest.raises(CorruptObjectError, match="gone"):
        tensorcas.load_state_dict(loc, "c")
    assert "gone" in list_checkpoints(loc).checkpoints[0].problem


def test_a_save_in_progress_is_incomplete_and_fails_if_its_chunks_are_removed(loc):
    """While a save runs its chunks show as an incomplete save; if someone removes them (as
    'checkpoints rm' would) after they were written, the save fails instead of publishing a
    checkpoint with holes."""
    seen = []

    class Meddling(Writer):
        def finish(self, metadata, results):  # every chunk is written by now
            listing = list_checkpoints(loc)
            seen.append(([c.name for c in listing.checkpoints], [s.name for s in listing.incomplete]))
            remove_checkpoints(loc, ["c"])
            super().finish(metadata, results)

    tensorcas.save_state_dict(loc, "first", {"x": torch.ones(1)})
    with warnings.catch_warnings(), pytest.raises(CheckpointException, match="is gone"):
        warnings.simplefilter("ignore")
        dcp.save(
            {"a": torch.ones(3), "b": torch.zeros(3)},
            storage_writer=Meddling(loc, "c"),
            no_dist=True,
        )
    assert seen == [(["first"], ["c"])]
    assert [c.name for c in list_checkpoints(loc).checkpoints] == ["first"]


def test_refused_setups(loc):
    """Per-rank manifests (use_collectives=False) and a save without a checkpoint name are
    refused before anything is written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((CheckpointError, CheckpointException), match="use_collectives"):
            dcp.save(
                {"x": torch.ones(1)},
                storage_writer=Writer(loc, "c"),
                use_collectives=False,
                no_dist=True,
            )
        with pytest.raises((CheckpointError, CheckpointException), match="no checkpoint name"):
            dcp.save({"x": torch.ones(1)}, storage_writer=Writer(loc), no_dist=True)
    assert not os.path.exists(os.path.join(loc, "logs")) or list_checkpoints(loc).checkpoints == []


# -- stores kept open between saves ------------------------------------------------------------


def test_saves_of_one_process_share_the_open_store_and_see_others_changes(loc):
    """The second save reads only new log lines, yet sees what other writers did meanwhile."""
    from tensorcas.dcp import opened

    torch.manual_seed(0)
    sd = {"w": torch.randn(1 << 18), "b": torch.arange(3.0)}
    tensorcas.save_state_dict(loc, "a", sd)
    store = opened.open_store(loc)
    # Another process's writer (here: a writer of its own) saves "b" and deletes "a".
    tensorcas.save_state_dict(ContentStoreWriter(loc).store.backend, "b", {"x": torch.ones(2)})
    remove_checkpoints(loc, ["a"])
    with pytest.raises(CheckpointError, match="already exists"):
        tensorcas.save_state_dict(loc, "b", sd)
    tensorcas.save_state_dict(loc, "a", sd)  # "a" is gone: a new name again
    assert opened.open_store(loc) is store
    assert torch.equal(tensorcas.load_state_dict(loc, "a")["w"], sd["w"])
    assert tensorcas.verify(loc).ok


def test_a_store_removed_and_made_again_is_opened_afresh(loc):
    import shutil

    from tensorcas.dcp import opened

    torch.manual_seed(0)
    sd = {"w": torch.randn(1 << 18), "b": torch.arange(3.0)}
    tensorcas.save_state_dict(loc, "a", sd)
    first = opened.open_store(loc)
    shutil.rmtree(loc)
    tensorcas.save_state_dict(loc, "a", sd)  # not "already exists"; every byte written again
    assert opened.open_store(loc) is not first
    back = tensorcas.load_state_dict(loc, "a")
    assert all(torch.equal(back[k], v) for k, v in sd.items())
    assert tensorcas.verify(loc).ok


def _logs(loc: str) -> list[str]:
    return sorted(os.listdir(os.path.join(loc, "logs")))


def test_saves_of_one_process_append_to_one_log(loc):
    """A finished save gives its writer back: the next save of the process appends to the same
    log, so a series of checkpoints adds one log per process, not one per save."""
    from tensorcas.dcp import opened

    torch.manual_seed(0)
    sd = {"w": torch.randn(1 << 18), "b": torch.arange(3.0)}
    for step in range(4):
        sd["b"].add_(1)
        dcp.save(sd, storage_writer=Writer(loc, f"step-{step}"), no_dist=True)
    assert len(_logs(loc)) == 1
    assert list_checkpoints(loc).checkpoints[-1].name == "step-3"
    # Each save seals its packs: gc rewrites them while the writer stays open.
    remove_checkpoints(loc, ["step-0", "step-1", "step-2"])
    assert tensorcas.gc(loc, grace_seconds=0).bytes_freed > 0
    back = tensorcas.load_state_dict(loc, "step-3")
    assert all(torch.equal(back[k], v) for k, v in sd.items())
    logs = _logs(loc)  # with the one that removing the checkpoints appended to
    sd["b"].add_(1)
    dcp.save(sd, storage_writer=Writer(loc, "step-4"), no_dist=True)
    assert _logs(loc) == logs
    opened.forget()  # closes the kept writers
    back = tensorcas.load_state_dict(loc, "step-4")
    assert all(torch.equal(back[k], v) for k, v in sd.items())
    assert tensorcas.verify(loc).ok


def test_a_failed_save_closes_its_writer_and_the_next_save_starts_a_log(loc, monkeypatch):
    from tensorcas.dcp import catalog

    sd = {"w": torch.arange(6.0), "b": torch.ones(2)}
    dcp.save(sd, storage_writer=Writer(loc, "a"), no_dist=True)

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(catalog, "publish_manifest", fail)
    with pytest.raises(CheckpointException):
        dcp.save(sd, storage_writer=Writer(loc, "b"), no_dist=True)
    monkeypatch.undo()
    logs = _logs(loc)
    assert len(logs) == 1  # the failed save's writer was the kept one, now closed
    dcp.save(sd, storage_writer=Writer(loc, "c"), no_dist=True)
    assert len(_logs(loc)) == 2
    assert [c.name for c in list_checkpoints(loc).checkpoints] == ["a", "c"]
    assert tensorcas.verify(loc).ok


def test_a_kept_store_is_not_taken_for_a_new_one_by_later_writers(tmp_path):
    """The save that created a store kept it; a writer of a later save must still learn from
    the logs which blobs are stored (on object storage that decides whether it looks before
    sending bytes), not take the store for the empty one it was."""
    from tensorcas.dcp import opened

    loc = str(tmp_path / "new")
    w = torch.randn(1 << 18)
    tensorcas.save_state_dict(loc, "a", {"w": w})
    writer = ContentStoreWriter.sharing(opened.open_store(loc))
    try:
        digest = ContentStoreReader(loc).read_tensor_metadata(
            ContentStoreReader(loc).list_tensors("checkpoints/a/")[0]
        ).blob
        writer._place.read_index_once()  # as a writer's first write does
        assert writer._place.named(digest)
    finally:
        writer.close()


def test_loads_of_one_process_read_only_new_log_lines_and_never_write(loc):
    """A load keeps its store open, read-only, for the next load (an evaluation job going through
    checkpoints, ``checkpoints ls`` in a training loop): that one reads only what was appended
    since.  A store removed meanwhile is not found, as it is."""
    from tensorcas.dcp import opened

    sd = {"w": torch.arange(1024.0), "b": torch.ones(3)}
    for step in range(3):
        sd["b"].add_(1)
        tensorcas.save_state_dict(loc, f"c{step}", sd)
        opened.forget(loc)  # a log per save, as separate jobs would leave
    assert torch.equal(tensorcas.load_state_dict(loc, "c0")["b"], torch.full((3,), 2.0))
    store = opened.open_store(loc, read_only=True)
    earlier = set(store.log.log_keys())
    read: list[tuple[str, int]] = []
    real = store.backend.read_range

    def counting(key, offset, nbytes):
        read.append((key, offset))
        return real(key, offset, nbytes)

    store.backend.read_range = counting  # type: ignore[method-assign]
    tensorcas.save_state_dict(loc, "c3", sd)
    assert torch.equal(tensorcas.load_state_dict(loc, "c3")["b"], sd["b"])
    assert opened.open_store(loc, read_only=True) is store
    assert any(key not in earlier for key, _ in read)  # the load read the new log here
    assert not [key for key, offset in read if key in earlier and offset == 0], read
    with pytest.raises(tensorcas.StoreError, match=r"read-only|read only"):
        store.backend.delete("logs/x.log")
    shutil.rmtree(loc)
    with pytest.raises(CheckpointNotFoundError):
        tensorcas.load_state_dict(loc, "c3")
