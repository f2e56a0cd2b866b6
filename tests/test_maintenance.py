"""The maintenance functions, called directly: ls, show, du, diff, rm, gc, export and import."""

from __future__ import annotations

import json
import math
import os
import time

import blake3
import pytest
import torch
import torch.utils._content_store as torch_content_store
from safetensors.torch import load_file, save_file

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter, maintenance
from tensorcas import format as fmt
from tensorcas.backends.memory import MemoryBackend
from tensorcas.maintenance._common import iter_chunks
from tensorcas.maintenance.gc import TEMPORARY_MIN_AGE_SECONDS
from tensorcas.store import PACK_THRESHOLD, Location, Store

BIG = PACK_THRESHOLD // 4 + 1024  # float32 elements: a loose blob, not a packed one


def write(loc: Location, tensors: dict[str, torch.Tensor]) -> None:
    with ContentStoreWriter(loc) as writer:
        for name, tensor in tensors.items():
            writer.write_tensor(name, tensor)


def blob_file(loc: str, digest: str) -> str:
    return os.path.join(loc, *fmt.blob_key(digest).split("/"))


def age(path: str, seconds: float) -> None:
    """Make a file look untouched for ``seconds``."""
    then = time.time() - seconds
    os.utime(path, (then, then))


# -- ls and show ---------------------------------------------------------------------------------


def test_ls_lists_in_writing_order_with_prefix_rules(loc):
    write(
        loc,
        {
            "model/b": torch.zeros(2),
            "model2/x": torch.zeros(1),
            "model/a": torch.ones(3, 4),
            "model": torch.zeros(1),
        },
    )
    assert [r.name for r in tensorcas.ls(loc)] == ["model/b", "model2/x", "model/a", "model"]
    assert [r.name for r in tensorcas.ls(loc, "model")] == ["model/b", "model/a", "model"]
    assert [r.name for r in tensorcas.ls(loc, "model/")] == ["model/b", "model/a"]
    record = tensorcas.ls(loc, "model/a")[0]
    assert (record.dtype, record.shape, record.view_nbytes) == ("float32", (3, 4), 48)


def test_iter_chunks_walks_strided_views_in_row_major_order():
    base = torch.arange(7 * 5 * 3, dtype=torch.float32).reshape(7, 5, 3)
    for view in (base, base.transpose(0, 2), base[:, 1], base[::2, :, ::2], base[0, 0, 0]):
        for limit in (1, 2, 4, 7, 1000):
            chunks = list(iter_chunks(view, limit))
            assert torch.equal(torch.cat(chunks), view.reshape(-1))
            assert all(c.numel() <= limit for c in chunks)


def test_show_statistics_of_floats_with_nan_inf_and_zeros(loc):
    values = torch.tensor([1.0, float("nan"), float("inf"), 0.0, -float("inf"), 3.0, 0.0])
    write(loc, {"x": values, "t": torch.randn(40, 30).t()})
    summary = tensorcas.show(loc, "x", values=3, bins=4)
    s = summary.stats
    assert s is not None
    assert (s.numel, s.finite, s.nan, s.posinf, s.neginf, s.zeros) == (7, 4, 1, 1, 1, 2)
    assert (s.min, s.max, s.mean) == (0.0, 3.0, 1.0)
    assert s.std == pytest.approx(torch.tensor([1.0, 0.0, 3.0, 0.0]).std().item())
    assert summary.values is not None and summary.values[0] == 1.0 and math.isnan(summary.values[1])
    assert summary.histogram is not None and sum(summary.histogram.counts) == 4
    assert len(summary.histogram.lines()) == 4
    as_json = summary.to_json()
    assert as_json["values"][1] == "nan" and as_json["stats"]["inf"] == 2

    t = ContentStoreReader(loc).read_tensor("t")
    st = tensorcas.show(loc, "t").stats
    assert st is not None
    assert st.mean == pytest.approx(t.double().mean().item())
    assert st.std == pytest.approx(t.double().std().item())
    assert st.min == pytest.approx(t.min().item()) and st.max == pytest.approx(t.max().item())


def test_show_handles_int_bool_complex_and_float8(loc):
    big = 2**62 + 1  # not representable in float64: min and max must stay exact
    write(
        loc,
        {
            "i": torch.tensor([big, -5, 0], dtype=torch.int64),
            "b": torch.tensor([True, False, True, True]),
            "c": torch.tensor([3 + 4j, 0j, complex("nan")], dtype=torch.complex64),
            "f8": torch.tensor([0.5, -2.0, 0.0]).to(torch.float8_e4m3fn),
        },
    )
    si = tensorcas.show(loc, "i", values=3).stats
    assert si is not None and (si.min, si.max, si.zeros) == (-5, big, 1)
    sb = tensorcas.show(loc, "b")
    assert sb.stats is not None and (sb.stats.mean, sb.stats.zeros, sb.stats.max) == (0.75, 1, 1)
    assert sb.histogram is None
    sc = tensorcas.show(loc, "c", values=2)
    assert sc.stats is not None and sc.stats.of == "magnitudes"
    assert (sc.stats.max, sc.stats.nan, sc.stats.zeros) == (5.0, 1, 1)
    assert sc.to_json()["values"] == [[3.0, 4.0], [0.0, 0.0]]
    s8 = tensorcas.show(loc, "f8", values=3)
    assert s8.stats is not None and (s8.stats.min, s8.stats.max) == (-2.0, 0.5)
    assert s8.values == [0.5, -2.0, 0.0]


# -- du ------------------------------------------------------------------------------------------


def test_du_counts_logical_against_stored_bytes(loc):
    x = torch.randn(BIG)
    write(loc, {"x": x, "x_again": x.clone(), "half": x[: BIG // 2], "other": torch.randn(BIG)})
    usage = tensorcas.du(loc, top=2)
    blob = BIG * 4
    assert usage.names == 4
    assert usage.logical_bytes == 3 * blob + (BIG // 2) * 4
    assert (usage.referenced_blobs, usage.referenced_bytes) == (2, 2 * blob)
    assert usage.dedupe_ratio == pytest.approx(usage.logical_bytes / (2 * blob))
    assert [r.name for r in usage.largest] == ["x", "x_again"]
    tensorcas.rm(loc, ["other"])
    usage = tensorcas.du(loc)
    assert (usage.unreferenced_blobs, usage.unreferenced_bytes) == (1, blob)
    assert usage.stored_bytes >= 2 * blob and usage.to_json()["dedupe_ratio"] > 1


# -- diff ----------------------------------------------------------------------------------------


def test_diff_classifies_and_locates_differences(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    x = torch.randn(6, 5)
    changed = x.clone()
    changed[4, 3] += 10.0
    changed[1, 2] += 0.5
    write(
        a,
        {
            "same": x,
            "near": x,
            "far": changed.clone(),
            "gone": x,
            "shape": x,
            "cast": x,
            "nan": torch.tensor([float("nan"), 1.0]),
        },
    )
    write(
        b,
        {
            "same": x.t().contiguous().t(),
            "near": x + 1e-7,
            "far": x,
            "shape": x.t(),
            "cast": x.double(),
            "nan": torch.tensor([float("nan"), 1.0]),
            "new": x,
        },
    )
    result = tensorcas.diff(a, b, rtol=1e-5, atol=1e-6)
    by_key = {e.key: e for e in result.entries}
    assert [e.key for e in result.entries] == [
        "same",
        "near",
        "far",
        "gone",
        "shape",
        "cast",
        "nan",
        "new",
    ]
    assert by_key["same"].status == "identical"
    assert by_key["nan"].status == "identical"
    assert by_key["near"].status == "close"
    assert by_key["cast"].status == "close" and "float32 vs float64" in by_key["cast"].reason
    far = by_key["far"]
    assert far.status == "different" and far.mismatched == 2
    assert far.max_abs_index == [4, 3] and far.max_abs_error == pytest.approx(10.0, rel=1e-5)
    assert far.first_mismatch_index == [1, 2]
    assert by_key["shape"].status == "different" and "shape" in by_key["shape"].reason
    assert (by_key["gone"].status, by_key["new"].status) == ("only-in-a", "only-in-b")
    assert not result.ok and result.first_difference is far
    assert result.to_json()["counts"]["different"] == 2

    assert tensorcas.diff(a + ":same", b + ":same").ok
    assert not tensorcas.diff(a + ":far", b + ":far").ok


def test_diff_of_two_prefixes_of_one_store_and_target_syntax(loc):
    x = torch.randn(10)
    write(loc, {"step1/x": x, "step1/y": x * 2, "step2/x": x, "step2/y": x * 2 + 1})
    result = tensorcas.diff(f"{loc}:step1/", f"{loc}:step2")
    assert [(e.key, e.status) for e in result.entries] == [("x", "identical"), ("y", "different")]
    assert result.entries[1].name_a == "step1/y" and result.entries[1].name_b == "step2/y"
    assert maintenance.parse_target(loc) == maintenance.Target(loc, "")
    assert maintenance.parse_target(f"{loc}:step1/") == maintenance.Target(loc, "step1/")
    with pytest.raises(tensorcas.InvalidNameError):
        maintenance.parse_target(f"{loc}:../x")
    with pytest.raises(tensorcas.StoreNotFoundError):
        tensorcas.diff(f"{loc}-missing", loc)


# -- rm ------------------------------------------------------------------------------------------


def test_rm_names_and_prefixes_checks_everything_first(loc):
    write(
        loc,
        {
            "keep": torch.zeros(1),
            "tmp/a": torch.zeros(1),
            "tmp/sub/b": torch.zeros(1),
            "w": torch.ones(1),
        },
    )
    with pytest.raises(tensorcas.TensorNotFoundError, match="'tmp/'"):
        tensorcas.rm(loc, ["w", "tmp"])  # 'tmp' is a directory of names, not a tensor
    with pytest.raises(tensorcas.TensorNotFoundError):
        tensorcas.rm(loc, ["w", "nothing/"])
    assert len(tensorcas.ls(loc)) == 4  # nothing was removed
    assert tensorcas.rm(loc, ["tmp/"], dry_run=True).removed == ["tmp/a", "tmp/sub/b"]
    assert len(tensorcas.ls(loc)) == 4
    report = tensorcas.rm(loc, ["tmp/", "w"])
    assert report.removed == ["tmp/a", "tmp/sub/b", "w"]
    assert [r.name for r in tensorcas.ls(loc)] == ["keep"]
    with pytest.raises(tensorcas.StoreNotFoundError):
        tensorcas.rm(os.path.join(loc, "nope"), ["x"])
    assert not os.path.exists(os.path.join(loc, "nope"))


# -- gc ------------------------------------------------------------------------------------------


def test_gc_removes_only_stale_unreferenced_blobs(loc):
    kept, dropped = torch.randn(BIG), torch.randn(BIG)
    write(loc, {"kept": kept, "dropped": dropped, "small": torch.ones(2)})
    d_kept = tensorcas.ls(loc, "kept")[0].blob
    d_dropped = tensorcas.ls(loc, "dropped")[0].blob
    tensorcas.rm(loc, ["dropped", "small"])
    for digest in (d_kept, d_dropped):
        age(blob_file(loc, digest), 7200)

    dry = tensorcas.gc(loc, dry_run=True)
    assert [b.digest for b in dry.removed_blobs] == [d_dropped] and dry.bytes_freed == BIG * 4
    assert os.path.exists(blob_file(loc, d_dropped))

    # A writer stores the same bytes again: it touches the blob (its record would follow), so
    # even a gc that read the records before the touch must keep it.
    store = Store.open(loc)
    assert store.blobs.reuse(d_dropped, BIG * 4)
    report = tensorcas.gc(loc)
    assert report.removed_blobs == [] and report.kept_recent == 1
    assert report.packed_unreferenced_blobs == 1  # the packed 'small' blob is reported, not removed

    age(blob_file(loc, d_dropped), 7200)
    report = tensorcas.gc(loc, grace_seconds=3600)
    assert [b.digest for b in report.removed_blobs] == [d_dropped]
    assert not os.path.exists(blob_file(loc, d_dropped))
    assert torch.equal(ContentStoreReader(loc).read_tensor("kept"), kept)
    assert tensorcas.verify(loc).ok


def test_gc_grace_zero_collects_now_and_cleans_old_temporaries(loc):
    write(loc, {"x": torch.randn(BIG)})
    digest = tensorcas.ls(loc)[0].blob
    tensorcas.rm(loc, ["x"])
    stale_tmp = os.path.join(loc, "blobs", ".tmp-leftover")
    fresh_tmp = os.path.join(loc, "blobs", ".tmp-inflight")
    for path in (stale_tmp, fresh_tmp):
        with open(path, "wb") as f:
            f.write(b"partial")
    age(stale_tmp, 7200)
    report = tensorcas.gc(loc)
    assert report.removed_blobs == [] and report.removed_temporaries == ["blobs/.tmp-leftover"]
    assert not os.path.exists(stale_tmp) and os.path.exists(fresh_tmp)
    report = tensorcas.gc(loc, grace_seconds=0)
    assert [b.digest for b in report.removed_blobs] == [digest]
    assert report.to_json()["bytes_freed"] == BIG * 4
    # A young temporary may be a write in progress: kept whatever the grace, until it is old.
    assert os.path.exists(fresh_tmp)
    age(fresh_tmp, TEMPORARY_MIN_AGE_SECONDS + 1)
    report = tensorcas.gc(loc, grace_seconds=0)
    assert report.removed_temporaries == ["blobs/.tmp-inflight"] and report.bytes_freed == 7


def test_gc_refuses_a_store_with_unreadable_records(loc):
    write(loc, {"x": torch.randn(BIG)})
    log = os.path.join(loc, "logs", os.listdir(os.path.join(loc, "logs"))[0])
    with open(log, "ab") as f:
        f.write(b"0123456789abcdef {not a record}\n")
    with pytest.raises(maintenance.DamagedStoreError, match="verify"):
        tensorcas.gc(loc, grace_seconds=0)
    assert tensorcas.gc(loc, grace_seconds=0, force=True).referenced == 1


def test_gc_works_on_a_memory_backend():
    backend = MemoryBackend()
    write(backend, {"x": torch.randn(BIG), "y": torch.randn(BIG)})
    tensorcas.rm(backend, ["y"])
    assert len(tensorcas.gc(backend, grace_seconds=0).removed_blobs) == 1
    assert [r.name for r in Store.open(backend).records()] == ["x"]


# -- export and import ---------------------------------------------------------------------------


def test_import_torch_content_store_keeps_views_and_sharing(tmp_path, loc):
    source = str(tmp_path / "torch-store")
    base = torch.arange(24, dtype=torch.float32)
    writer = torch_content_store.ContentStoreWriter(source, stable_hash=True)
    writer.write_tensor("net/w", base.view(4, 6))
    writer.write_tensor("net/w_t", base.view(4, 6).t())
    writer.write_tensor("net/slice", base[5:9])
    writer.write_tensor("ids", torch.tensor([1, 2, 3]))
    report = tensorcas.import_store(loc, source, "run1")
    assert report.kind == "torch-content-store"
    assert sorted(report.names) == ["run1/ids", "run1/net/slice", "run1/net/w", "run1/net/w_t"]
    reader = ContentStoreReader(loc)
    original = torch_content_store.ContentStoreReader(source)
    for name in ("net/w", "net/w_t", "net/slice", "ids"):
        got, want = reader.read_tensor("run1/" + name), original.read_tensor(name)
        assert torch.equal(got, want) and got.stride() == want.stride()
        assert got.storage_offset() == want.storage_offset()
    blobs = {r.name: r.blob for r in tensorcas.ls(loc)}
    assert blobs["run1/net/w"] == blobs["run1/net/w_t"] == blobs["run1/net/slice"]


def test_import_rejects_bad_sources_before_writing(tmp_path, loc):
    source = str(tmp_path / "torch-store")
    torch_content_store.ContentStoreWriter(source, stable_hash=True).write_tensor(
        "x", torch.zeros(4)
    )
    meta_path = os.path.join(source, "tensors", "x")
    dtype, h, _, _, _, extra = torch.load(meta_path, weights_only=True)
    torch.save((dtype, h, 0, (100,), (1,), extra), meta_path)  # a view past the storage's end
    with pytest.raises(maintenance.ImportSourceError, match="needs 400 bytes"):
        tensorcas.import_store(loc, source)
    torch.save((dtype, "../../etc/passwd", 0, (4,), (1,), extra), meta_path)
    with pytest.raises(maintenance.ImportSourceError, match="storage hash"):
        tensorcas.import_store(loc, source)

    bad_names = str(tmp_path / "bad.safetensors")
    save_file({"ok": torch.zeros(1), "a//b": torch.zeros(1)}, bad_names)
    with pytest.raises(maintenance.ImportSourceError, match="a//b"):
        tensorcas.import_store(loc, bad_names)
    not_safetensors = tmp_path / "junk.bin"
    not_safetensors.write_bytes(b"\x00" * 64)
    with pytest.raises(maintenance.ImportSourceError):
        tensorcas.import_store(loc, str(not_safetensors))
    assert not os.path.exists(loc) or tensorcas.ls(loc) == []


def test_export_to_safetensors_copies_shared_views_and_round_trips(tmp_path, loc):
    base = torch.randn(8, 4)
    write(
        loc,
        {
            "m/w": base,
            "m/w_t": base.t(),
            "m/b": torch.arange(3),
            "other": torch.ones(2, dtype=torch.bfloat16),
        },
    )
    out = str(tmp_path / "m.safetensors")
    report = tensorcas.export_safetensors(loc, out, "m/", strip_prefix=True)
    assert report.tensors == 3 and sorted(report.copied_shared) == ["m/w", "m/w_t"]
    assert any("m/w_t" in note for note in report.notes)
    loaded = load_file(out)
    assert sorted(loaded) == ["b", "w", "w_t"]
    assert torch.equal(loaded["w"], base) and torch.equal(loaded["w_t"], base.t())
    assert torch.equal(loaded["b"], torch.arange(3))
    with pytest.raises(maintenance.ExportError, match="exists"):
        tensorcas.export_safetensors(loc, out)
    full = tensorcas.export_safetensors(loc, out, overwrite=True)
    assert full.tensors == 4 and load_file(out)["other"].dtype == torch.bfloat16
    assert [f for f in os.listdir(tmp_path) if ".tmp-" in f] == []

    again = str(tmp_path / "again")
    tensorcas.import_store(again, out)
    assert tensorcas.diff(loc, again).ok


def test_export_refuses_dtypes_safetensors_cannot_hold(tmp_path, loc):
    write(loc, {"z": torch.zeros(2, dtype=torch.complex128)})
    with pytest.raises(maintenance.ExportError, match="complex128"):
        tensorcas.export_safetensors(loc, str(tmp_path / "z.safetensors"))
    with pytest.raises(tensorcas.TensorNotFoundError):
        tensorcas.export_safetensors(loc, str(tmp_path / "z.safetensors"), "nothing/")
    assert not os.path.exists(tmp_path / "z.safetensors")


def test_gc_restores_the_trash_of_an_interrupted_gc(loc):
    x = torch.randn(BIG)
    write(loc, {"x": x})
    path = blob_file(loc, tensorcas.ls(loc)[0].blob)
    directory, base = os.path.split(path)
    trash = os.path.join(directory, f".gc-{base}.0123abcd")
    os.rename(path, trash)  # a gc stopped after moving the blob aside
    age(trash, 7200)
    assert not tensorcas.verify(loc).ok
    report = tensorcas.gc(loc)
    assert report.restored_trash == [os.path.relpath(trash, loc).replace(os.sep, "/")]
    assert report.removed_temporaries == [] and report.bytes_freed == 0
    assert not os.path.exists(trash)
    assert torch.equal(ContentStoreReader(loc).read_tensor("x"), x)


def test_gc_refuses_when_a_record_is_damaged_behind_a_valid_checksum(loc):
    write(loc, {"x": torch.randn(BIG)})
    digest = tensorcas.ls(loc)[0].blob
    body = json.dumps(
        {
            "op": "put",
            "t": time.time_ns(),
            "name": "bad",
            "dtype": "no-such-dtype",
            "shape": [1],
            "stride": [1],
            "offset": 0,
            "requires_grad": False,
            "blob": digest,
            "nbytes": 4,
        },
        separators=(",", ":"),
    ).encode()
    log = os.path.join(loc, "logs", os.listdir(os.path.join(loc, "logs"))[0])
    with open(log, "ab") as f:
        f.write(blake3.blake3(body).hexdigest()[:16].encode() + b" " + body + b"\n")
    with pytest.raises(maintenance.DamagedStoreError):
        tensorcas.gc(loc, grace_seconds=0)
