"""A gc killed between moving a blob aside and deciding its fate loses nothing."""

from __future__ import annotations

import os

import torch

import tensorcas
from tensorcas import format as fmt
from tensorcas.maintenance.gc import gc


def test_trash_left_by_an_interrupted_gc_is_restored(loc):
    with tensorcas.ContentStoreWriter(loc) as writer:
        record = writer.write_tensor("x", torch.randn(100_000))
    path = os.path.join(loc, *fmt.blob_key(record.blob).split("/"))
    directory, base = os.path.split(path)
    os.rename(path, os.path.join(directory, f".gc-{base}.0badc0de"))  # what a killed gc leaves
    assert not tensorcas.verify(loc).ok

    report = gc(loc, grace_seconds=0)

    assert report.removed_blobs == []
    assert tensorcas.verify(loc).ok
    assert sorted(os.listdir(directory)) == [base]
    assert tensorcas.ContentStoreReader(loc, verify=True).read_tensor("x").numel() == 100_000
