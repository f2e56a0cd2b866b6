"""``show`` walks a tensor in bounded memory: large views are read from their blob a piece at a
time (each piece once per pass), the statistics match a walk of the whole tensor, and a progress
callback follows the walk."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch

import tensorcas
from tensorcas import ContentStoreWriter
from tensorcas.maintenance import _stats

#: Each blob is over 64 KiB, so that it is a loose blob (small ones are packed and read whole).
LAYOUTS = {
    "contiguous": lambda: torch.randn(200, 100),
    "rows-with-offset": lambda: torch.randn(300, 100)[7:247],
    "channels-last": lambda: torch.randn(2, 16, 24, 24).to(memory_format=torch.channels_last),
    "transposed": lambda: torch.randn(400, 100).t(),
    "expanded-rows": lambda: torch.randn(1, 20000).expand(7, 20000),
    "non-finite": lambda: torch.tensor([1.0, math.nan, -math.inf, 0.0, math.inf, 3.0] * 3000),
    "float16": lambda: torch.randn(200, 200).half(),
    "bfloat16": lambda: torch.randn(200, 200).bfloat16(),
    "int32": lambda: torch.randint(-1000, 1000, (200, 100), dtype=torch.int32),
    "complex64": lambda: torch.randn(100, 100, dtype=torch.complex64),
    "bool": lambda: torch.rand(70000) > 0.3,
    "float8": lambda: torch.randn(70000).to(torch.float8_e4m3fn),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    loc = str(tmp_path_factory.mktemp("stream") / "store")
    torch.manual_seed(0)
    with ContentStoreWriter(loc) as writer:
        for name, make in LAYOUTS.items():
            writer.write_tensor(name, make())
    return loc


def summary_json(loc: str, name: str) -> dict:
    return tensorcas.show(loc, name, values=5, bins=7).to_json()


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_pieces_read_from_the_blob_give_the_same_summary(store, name, monkeypatch):
    whole = summary_json(store, name)
    monkeypatch.setattr(_stats, "WHOLE_READ_BYTES", 0)  # stream every blob...
    monkeypatch.setattr(_stats, "PIECE_BYTES", 4000)  # ...in many small pieces
    streamed = summary_json(store, name)
    spread = abs(whole["stats"]["std"] or 0.0) + 1e-12
    for key, rel in (("min", 0), ("max", 0), ("mean", 1e-6), ("std", 1e-6)):
        a, b = whole["stats"][key], streamed["stats"][key]
        # pieces cut elsewhere round elsewhere: agreement to float32 precision of the spread
        assert a == b or a == pytest.approx(b, rel=rel, abs=1e-6 * spread), (key, a, b)
    for key in ("numel", "finite", "nan", "posinf", "neginf", "zeros"):
        assert whole["stats"][key] == streamed["stats"][key], key
    assert whole["histogram"] == streamed["histogram"]
    assert whole["values"] == streamed["values"]
    reference = tensorcas.ContentStoreReader(store).read_tensor(name)
    if reference.dtype.is_floating_point and reference.dtype.itemsize > 1:
        finite = reference.double()[reference.double().isfinite()]
        std = float(finite.std())
        # float32 pieces are reduced in float32, as tensor.mean() would: exact to its precision
        assert streamed["stats"]["mean"] == pytest.approx(float(finite.mean()), abs=1e-6 * std)
        assert streamed["stats"]["std"] == pytest.approx(std, rel=1e-5)


def test_compact_views_are_streamed_not_read_whole(store, monkeypatch):
    monkeypatch.setattr(_stats, "WHOLE_READ_BYTES", 0)
    monkeypatch.setattr(_stats, "PIECE_BYTES", 40000)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("read whole")

    monkeypatch.setattr(tensorcas.ContentStoreReader, "read_tensor", refuse)
    for name in ("contiguous", "rows-with-offset", "channels-last", "expanded-rows"):
        tensorcas.show(store, name)
    with pytest.raises(AssertionError, match="read whole"):
        tensorcas.show(store, "transposed")  # every row spans the blob: mapped instead


def test_progress_follows_both_passes(store):
    calls: list[tuple[int, int | None]] = []
    tensorcas.show(store, "contiguous", progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (2 * 20000, 2 * 20000)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_memory_stays_bounded_on_a_large_tensor(tmp_path):
    """A 128 MiB tensor is summarised with far less memory than its size (its blob is neither
    read whole nor left mapped)."""
    loc = str(tmp_path / "big")
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.randn(32 << 20))
    code = f"""
        import json, resource, tensorcas, torch
        from tensorcas.maintenance import _stats
        _stats.PIECE_BYTES = 8 << 20  # memory follows the piece size, not the tensor's
        def rss():  # resident now, in bytes
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize()
        peak = [0]
        start = rss()
        summary = tensorcas.show({loc!r}, "x", progress=lambda d, t: peak.__setitem__(0, max(peak[0], rss())))
        print(json.dumps({{"growth": peak[0] - start, "std": summary.stats.std}}))
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["std"] == pytest.approx(1.0, rel=1e-2)
    assert result["growth"] < 48 << 20, result
