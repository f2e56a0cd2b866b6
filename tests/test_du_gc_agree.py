"""``du`` reports what ``gc`` frees: the same rule decides (``maintenance._collect``), so the bytes
du calls "freed by gc" are the bytes a gc past the grace period frees, and unused blobs gc keeps in
packs are reported apart as "unused inside packs"."""

from __future__ import annotations

import subprocess
import sys

import torch

import tensorcas
from tensorcas import ContentStoreWriter
from tensorcas.maintenance._common import format_nbytes


def small(i: int) -> torch.Tensor:
    return torch.full((256,), float(i))  # 1 KiB: packed


def test_du_freed_by_gc_matches_what_gc_frees(loc):
    with ContentStoreWriter(loc) as writer:  # a pack that stays mostly in use
        for i in range(10):
            writer.write_tensor(f"kept/{i}", small(i))
    with ContentStoreWriter(loc) as writer:  # a pack that becomes unused
        for i in range(100, 110):
            writer.write_tensor(f"old/{i}", small(i))
        writer.write_tensor("big", torch.randn(1 << 16))  # a loose blob
    still_open = ContentStoreWriter(loc)  # a pack whose writer is still open
    for i in range(200, 205):
        still_open.write_tensor(f"open/{i}", small(i))
    still_open.flush()
    tensorcas.rm(loc, ["kept/0", "old/", "big", "open/"])

    usage = tensorcas.du(loc)
    planned = tensorcas.gc(loc, grace_seconds=0, dry_run=True)
    assert planned.removed_temporaries == []
    assert usage.freeable_bytes == planned.bytes_freed
    in_removed_packs = 10  # old/*
    assert usage.freeable_blobs == len(planned.removed_blobs) + in_removed_packs
    assert usage.packed_unused_blobs == planned.packed_unreferenced_blobs == 1 + 5
    assert usage.packed_unused_bytes == planned.packed_unreferenced_bytes
    assert usage.unreferenced_blobs == usage.freeable_blobs + usage.packed_unused_blobs

    text = subprocess.run(
        [sys.executable, "-m", "tensorcas", "du", loc], capture_output=True, text=True, timeout=300
    ).stdout
    freed_line = next(line for line in text.splitlines() if line.startswith("freed by gc"))
    assert format_nbytes(planned.bytes_freed) in freed_line and "11 unused blobs" in freed_line
    packed_line = next(line for line in text.splitlines() if line.startswith("unused inside packs"))
    assert "6 blobs" in packed_line and "kept by gc" in packed_line

    done = tensorcas.gc(loc, grace_seconds=0)
    assert done.bytes_freed == usage.freeable_bytes
    after = tensorcas.du(loc)
    assert after.freeable_bytes == 0 and after.packed_unused_blobs == 6
    still_open.close()
    assert tensorcas.verify(loc).ok
