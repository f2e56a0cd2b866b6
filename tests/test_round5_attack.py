"""Hostile callers of this round's write and DCP paths: batches whose blobs gc takes between a
record and its check, errors in the middle of a batch, prefix queries, writers kept between
saves that threads, evictions and forks reach at awkward moments."""

from __future__ import annotations

import errno
import os
import re
import time

import pytest
import torch

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas.backends.local import LocalBackend
from tensorcas.store import PACK_THRESHOLD

BIG = PACK_THRESHOLD // 4 + 1024  # float32 elements: a loose blob
SMALL = 16  # float32 elements: a packed blob


def _age_everything(root: str, seconds: float = 7200) -> None:
    then = time.time() - seconds
    for dirpath, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(dirpath, name), (then, then))


def _unreferenced(loc: str, tensors: list[torch.Tensor]) -> None:
    """A store holding the bytes of ``tensors`` that no name uses any more, two hours old."""
    with ContentStoreWriter(loc) as writer:
        for i, tensor in enumerate(tensors):
            writer.write_tensor(f"old/{i}", tensor)
        writer.write_tensor("filler", torch.arange(4.0) + 100)
    tensorcas.rm(loc, ["old/"])
    _age_everything(loc)


# -- write_tensors: every appended record is confirmed, whatever fails ---------------------------


def test_a_failed_check_in_a_batch_still_confirms_the_records_after_it(loc, monkeypatch):
    """gc at grace 0 takes two blobs of a batch after they were found stored and before their
    records; storing the first again fails (disk full).  The error is raised, and the second
    record, appended too, must still have its blob: before, the checks stopped at the first
    failure and left it naming a blob that was gone."""
    x, y = torch.randn(BIG), torch.randn(BIG)
    _unreferenced(loc, [x, y])
    # Stale for gc although the writer finds them (a touch that leaves the file time old).
    monkeypatch.setattr(LocalBackend, "touch", lambda self, key: self.stat(key) is not None)
    writer = ContentStoreWriter(loc)
    writer.write_tensor("warmup", torch.arange(3.0))
    real_put, real_publish = writer._log.put, writer.store.backend.put_if_absent
    state = {"puts": 0, "full": False}

    def gc_then_put(record, packed=None):
        tensorcas.gc(loc, grace_seconds=0)  # the blob found stored is collected first
        real_put(record, packed)
        state["puts"] += 1
        state["full"] = state["puts"] == 2  # the batch's last record: the disk fills up

    def publish(key, chunks, *args, **kwargs):
        if state["full"]:
            state["full"] = False
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_publish(key, chunks, *args, **kwargs)

    writer._log.put = gc_then_put
    writer.store.backend.put_if_absent = publish
    with pytest.raises(OSError, match="No space"):
        writer.write_tensors([("a", x.clone()), ("b", y.clone())])
    assert state["puts"] == 2
    writer.close()
    # "a" was never acknowledged; "b" is in the store and must read back.
    assert torch.equal(ContentStoreReader(loc, verify=True).read_tensor("b"), y)


# -- names under a prefix ------------------------------------------------------------------------


class _Natural(str):
    """A name that orders ``m2`` before ``m10`` (a natural sort, as a caller might use)."""

    def _key(self) -> list[object]:
        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str.__str__(self))]

    def __lt__(self, other: object) -> bool:
        return self._key() < _Natural(other)._key()  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        return self._key() > _Natural(other)._key()  # type: ignore[operator]

    def __le__(self, other: object) -> bool:
        return self._key() <= _Natural(other)._key()  # type: ignore[operator]

    def __ge__(self, other: object) -> bool:
        return self._key() >= _Natural(other)._key()  # type: ignore[operator]


def test_a_prefix_of_a_str_subclass_with_its_own_order_finds_every_name(loc):
    """The names under a prefix are found by a binary search over sorted names: a prefix whose
    class orders strings its own way must not steer it (before, 'm2/' found nothing)."""
    with ContentStoreWriter(loc) as writer:
        for i in range(12):
            writer.write_tensor(f"m{i}/w", torch.ones(1))
    reader = ContentStoreReader(loc)
    for i in range(12):
        for prefix in (f"m{i}/", f"m{i}"):
            assert reader.list_tensors(_Natural(prefix)) == [f"m{i}/w"], prefix
            assert reader.store.names(_Natural(prefix), refresh=False) == [f"m{i}/w"], prefix
