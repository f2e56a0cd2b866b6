"""Edge cases: writers after close, damaged second copies, interrupted pack collection, many
processes creating one store at once, records damaged where nothing reads them."""

from __future__ import annotations

import glob
import multiprocessing
import os
import time

import pytest
import torch

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas import format as fmt
from tensorcas.maintenance.gc import gc


def test_a_closed_writer_refuses_to_write(loc):
    writer = ContentStoreWriter(loc)
    writer.write_tensor("a", torch.ones(2))
    writer.close()
    for call in (lambda: writer.write_tensor("b", torch.ones(2)),
                 lambda: writer.write_storage(torch.ones(2).untyped_storage()),
                 lambda: writer.delete_tensor("a")):
        with pytest.raises(tensorcas.StoreError, match="is closed"):
            call()
    background = ContentStoreWriter(loc, background=True)
    background.close()
    with pytest.raises(tensorcas.StoreError, match="is closed"):
        background.write_tensor("c", torch.ones(2))
    assert ContentStoreReader(loc).list_tensors() == ["a"]
    assert len(os.listdir(os.path.join(loc, "logs"))) == 1


def test_verify_checks_every_copy_of_a_blob(loc):
    x = torch.arange(8.0)
    with ContentStoreWriter(loc) as writer:
        record = writer.write_tensor("x", x)  # packed
    # the same bytes also as a loose file (as another implementation might store them)
    store = tensorcas.store.Store.open(loc)
    store.backend.put_if_absent(fmt.blob_key(record.blob), bytes(x.untyped_storage()))
    assert tensorcas.verify(loc).ok
    (pack,) = glob.glob(os.path.join(loc, "packs", "*.pack"))
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:
        f.write(b"\xff")
    report = tensorcas.verify(loc)
    assert [f.kind for f in report.errors] == ["damaged-blob"]
    assert "packs/" in report.errors[0].message
    assert torch.equal(ContentStoreReader(loc, verify=True).read_tensor("x"), x)  # the sound copy


def test_a_pack_moved_aside_by_a_killed_gc_is_restored(loc):
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.arange(8.0))
    (pack,) = glob.glob(os.path.join(loc, "packs", "*.pack"))
    directory, base = os.path.split(pack)
    os.rename(pack, os.path.join(directory, f".gc-{base}.0badc0de"))  # what a killed gc leaves
    report = gc(loc, grace_seconds=0)
    assert len(report.restored_trash) == 1
    assert os.listdir(directory) == [base]
    assert torch.equal(ContentStoreReader(loc, verify=True).read_tensor("x"), torch.arange(8.0))


def test_temporaries_in_the_store_root_are_collected(loc):
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.ones(2))
    leftover = os.path.join(loc, ".tmp-" + "0" * 32)  # a marker write that was interrupted
    with open(leftover, "wb") as f:
        f.write(b"{")
    then = time.time() - 3600  # young temporaries may be writes in progress: gc keeps them
    os.utime(leftover, (then, then))
    report = gc(loc, grace_seconds=0)
    assert report.removed_temporaries == [".tmp-" + "0" * 32]
    assert not os.path.exists(leftover)


def _create_and_write(loc: str, i: int) -> None:
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor(f"t/{i}", torch.full((4,), float(i)))


def test_many_processes_create_one_store_at_once(tmp_path):
    context = multiprocessing.get_context("fork")
    for round_ in range(5):
        loc = os.fspath(tmp_path / f"store{round_}")
        processes = [context.Process(target=_create_and_write, args=(loc, i)) for i in range(6)]
        for p in processes:
            p.start()
        for p in processes:
            p.join(60)
        assert [p.exitcode for p in processes] == [0] * 6
        assert sorted(ContentStoreReader(loc).list_tensors()) == sorted(f"t/{i}" for i in range(6))


def test_verify_reports_damage_in_records_that_newer_records_replaced(loc):
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("w", torch.ones(2))
        writer.write_tensor("w", torch.zeros(2))
    (log,) = glob.glob(os.path.join(loc, "logs", "*.log"))
    with open(log, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    first_put = next(i for i, line in enumerate(lines) if b'"op":"put"' in line)
    body = lines[first_put][17:-1].replace(b'"dtype":"float32"', b'"dtype":"object"')
    lines[first_put] = fmt._frame_body(body)  # a valid checksum over a hostile value
    with open(log, "wb") as f:
        f.write(b"".join(lines))
    assert torch.equal(ContentStoreReader(loc).read_tensor("w"), torch.zeros(2))  # still readable
    report = tensorcas.verify(loc)
    assert [f.kind for f in report.errors] == ["damaged-record"]
    assert "object" in report.errors[0].message


def test_show_and_diff_refuse_views_too_expanded_to_walk(loc):
    from tensorcas.maintenance import diff, show

    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.ones(4))
    blob = ContentStoreReader(loc).read_tensor_metadata("x").blob
    (log,) = glob.glob(os.path.join(loc, "logs", "*.log"))
    record = fmt.TensorRecord("huge", "float32", (1 << 62,), (0,), 0, False, blob, 16)  # valid, absurd
    with open(log, "ab") as f:
        f.write(fmt.encode_put(record, 2**62))
    with pytest.raises(tensorcas.StoreError, match="too large to walk"):
        show(loc, "huge")
    other = os.path.join(os.path.dirname(loc), "other")
    with ContentStoreWriter(other) as writer:
        writer.write_tensor("huge", torch.zeros(1).expand(1 << 62))
    with pytest.raises(tensorcas.StoreError, match="too large to walk"):
        diff(loc, other)
