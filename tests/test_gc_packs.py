"""gc and packs: sealed packs are collected, open ones never; blobs in use move, intact."""

from __future__ import annotations

import os

import torch

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas.maintenance.gc import gc, rm


def packs(loc: str) -> list[str]:
    return sorted(os.listdir(os.path.join(loc, "packs")))


def small(i: int) -> torch.Tensor:
    return torch.full((256,), float(i))  # 1 KiB: packed


def write_run(loc: str, prefix: str, values: range) -> None:
    with ContentStoreWriter(loc) as writer:
        for i in values:
            writer.write_tensor(f"{prefix}/{i}", small(i))


def test_an_unused_sealed_pack_is_deleted(loc):
    write_run(loc, "old", range(50))
    write_run(loc, "new", range(100, 150))
    old_pack = packs(loc)[0]
    rm(loc, ["old/"])
    report = gc(loc, grace_seconds=0)
    assert [p.key for p in report.removed_packs] == [f"packs/{old_pack}"]
    assert report.removed_packs[0].rewritten == 0
    assert report.bytes_freed >= 50 * 1024
    assert old_pack not in packs(loc)
    assert tensorcas.verify(loc).ok
    reader = ContentStoreReader(loc, verify=True)
    assert all(torch.equal(reader.read_tensor(f"new/{i}"), small(i)) for i in range(100, 150))


def test_blobs_still_used_are_moved_before_their_pack_goes(loc):
    write_run(loc, "run1", range(40))
    stale_reader = ContentStoreReader(loc)  # its index still points at the old pack
    assert torch.equal(stale_reader.read_tensor("run1/7"), small(7))
    with ContentStoreWriter(loc) as writer:  # a later run reuses two of the small blobs
        writer.write_tensor("run2/a", small(3))
        writer.write_tensor("run2/b", small(7))
    rm(loc, ["run1/"])
    report = gc(loc, grace_seconds=0)
    assert len(report.removed_packs) == 1 and report.removed_packs[0].rewritten == 2 * 1024
    assert tensorcas.verify(loc).ok
    fresh = ContentStoreReader(loc, verify=True)
    assert torch.equal(fresh.read_tensor("run2/a"), small(3))
    assert torch.equal(fresh.read_tensor("run2/b"), small(7))
    # a reader opened before gc finds the blob's new place when the old one is gone
    assert torch.equal(stale_reader.read_tensor("run2/b"), small(7))


def test_a_pack_still_open_is_never_collected(loc):
    writer = ContentStoreWriter(loc)
    for i in range(10):
        writer.write_tensor(f"x/{i}", small(i))
    rm(loc, ["x/"])
    report = gc(loc, grace_seconds=0)
    assert report.removed_packs == [] and report.packed_unreferenced_blobs == 10
    writer.write_tensor("later", small(99))  # the writer goes on appending to its pack
    writer.close()
    assert torch.equal(ContentStoreReader(loc).read_tensor("later"), small(99))
    assert tensorcas.verify(loc).ok


def test_recently_touched_packs_are_kept(loc):
    write_run(loc, "a", range(10))
    rm(loc, ["a/"])
    report = gc(loc)  # the default grace period keeps what was written moments ago
    assert report.removed_packs == [] and len(packs(loc)) == 1


def test_mostly_used_packs_are_left_alone(loc):
    write_run(loc, "a", range(10))
    rm(loc, ["a/0"])
    assert gc(loc, grace_seconds=0).removed_packs == []


def test_a_damaged_pack_is_not_rewritten(loc):
    write_run(loc, "a", range(10))
    rm(loc, [f"a/{i}" for i in range(1, 10)])
    path = os.path.join(loc, "packs", packs(loc)[0])
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:  # flip a byte of a/0, the blob still in use
        f.seek(5)
        byte = f.read(1)
        f.seek(5)
        f.write(bytes([byte[0] ^ 0xFF]))
    report = gc(loc, grace_seconds=0)
    assert report.removed_packs == []
    assert [f.kind for f in tensorcas.verify(loc).errors] == ["damaged-blob"]


def test_dry_run_removes_nothing(loc):
    write_run(loc, "a", range(10))
    rm(loc, ["a/"])
    before = packs(loc)
    report = gc(loc, grace_seconds=0, dry_run=True)
    assert len(report.removed_packs) == 1 and packs(loc) == before
