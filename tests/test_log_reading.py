"""Reading logs: bounded windows, lines across window ends, torn tails, rejected headers."""

from __future__ import annotations

import glob
import os

import pytest
import torch

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas import format as fmt
from tensorcas import records as store_module


def test_lines_crossing_window_ends_are_read_whole(loc, monkeypatch):
    monkeypatch.setattr(store_module, "LOG_WINDOW", 1000)  # a few lines per window
    with ContentStoreWriter(loc) as writer:
        for i in range(200):
            writer.write_tensor(f"t/{i}", torch.full((3,), float(i)))
    reader = ContentStoreReader(loc)
    assert reader.list_tensors() == [f"t/{i}" for i in range(200)]
    assert reader.read_tensor("t/123")[0].item() == 123.0
    assert tensorcas.verify(loc).ok


def test_a_line_longer_than_a_window_rejects_the_rest_of_its_log(loc, monkeypatch):
    monkeypatch.setattr(store_module, "LOG_WINDOW", 4096)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("a", torch.ones(2))
    (log,) = glob.glob(os.path.join(loc, "logs", "*.log"))
    with open(log, "ab") as f:
        f.write(b"x" * 10_000)  # no newline: far longer than the window
    reader = ContentStoreReader(loc)
    assert reader.list_tensors() == ["a"]
    assert any("no line end" in f.message for f in tensorcas.verify(loc).errors)


def test_a_log_with_a_foreign_header_stays_ignored(loc):
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("a", torch.ones(2))
    reader = ContentStoreReader(loc)  # long-lived: it reads the foreign log twice
    foreign = os.path.join(loc, "logs", "0000-1-future.log")
    header = fmt._frame({"format": "tensorcas-log", "version": 2, "writer": "0000-1-future"})
    with open(foreign, "wb") as f:
        f.write(header)
    assert reader.list_tensors() == ["a"]
    record = fmt.make_record("b", torch.float32, (1,), (1,), 0, False, "blake3:" + "0" * 64, 4)
    with open(foreign, "ab") as f:  # a valid-looking header, then an entry, appended later
        f.write(fmt.encode_header("0000-1-future") + fmt.encode_put(record, 1))
    assert reader.list_tensors() == ["a"]
    assert ContentStoreReader(loc).list_tensors() == ["a"]


def test_torn_tail_is_a_warning_until_the_line_completes(loc):
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("a", torch.ones(2))
    (log,) = glob.glob(os.path.join(loc, "logs", "*.log"))
    record = fmt.make_record("b", torch.float32, (2,), (1,), 0, False,
                             tensorcas.ContentStoreReader(loc).read_tensor_metadata("a").blob, 8)
    line = fmt.encode_put(record, 2**62)
    with open(log, "ab") as f:
        f.write(line[:20])
    reader = ContentStoreReader(loc)
    assert reader.list_tensors() == ["a"]
    report = tensorcas.verify(loc)
    assert report.ok and [f.kind for f in report.findings] == ["torn-tail"]
    with open(log, "ab") as f:
        f.write(line[20:])
    assert reader.list_tensors() == ["a", "b"]
    assert tensorcas.verify(loc).findings == []


@pytest.mark.parametrize("size", [1 << 16, 1 << 33])
def test_an_oversized_marker_is_refused_without_reading_it(tmp_path, size):
    root = tmp_path / "store"
    root.mkdir()
    with open(root / "tensorcas.json", "wb") as f:
        f.truncate(size)  # sparse: costs no disk
    with pytest.raises(tensorcas.FormatError):
        ContentStoreReader(str(root))
