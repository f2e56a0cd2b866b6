"""Every ratio the benchmark reports, and the goal each is held to, in one table.

A row compares two contenders' medians within one workload: ``speed`` is the reference's time
over ours (above 1: we are faster), ``time`` is ours over the reference's (below 1: we take less).
``goal`` ``None`` marks a row shown for information.  ``what`` and ``ours`` are formatted with the
sizes the workload reports (``apply_goals``).  Rows appear in the order of this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .harness import Results, ratio_row


@dataclass(frozen=True)
class Goal:
    workload: str
    what: str
    ours: str
    ref: str
    kind: str  # "speed" or "time"
    goal: float | None = None
    ref_label: str | None = None


_W = "fresh write, {n} x {mib} MiB"
_RW = "unchanged rewrite, same store"
_P = "{changed}/{total} tensors changed"
_R = "eager read, {n} x {mib} MiB (page cache)"
_H = "hash_storage, {n} x {mib} MiB"
_S = "{n:,} small tensors, write + read back"
_L = "open + read 1 tensor of {mib} MiB"
_TORCH_STABLE = "PyTorch store (stable_hash=True)"
_FROMFILE = "raw np.fromfile + torch.from_numpy"
_NUMPY_READ = "raw read() into a new numpy array + torch.from_numpy"

GOALS: tuple[Goal, ...] = (
    Goal("write", _W, "tensorcas", "raw-write", "speed", 0.85, "raw write()"),
    Goal("write", _W, "tensorcas-bg", "raw-write", "speed", 0.8, "raw write()"),
    Goal("write", _W, "tensorcas", "torch-cs-sha1", "speed"),
    Goal("write", _W, "tensorcas", "torch.save", "speed"),
    Goal("write", _W, "tensorcas", "safetensors", "speed"),
    Goal("write", "fresh write, 4 x {mib} MiB", "tensorcas-4", "torch-cs-default-4", "speed", None, "PyTorch store (default)"),
    Goal("rewrite", _RW, "tensorcas", "hash-only (blake3)", "time", 1.25, "hashing-alone"),
    Goal("rewrite", _RW, "tensorcas-bg", "hash-only (blake3)", "time", 1.25, "hashing-alone"),
    Goal("rewrite", _RW, "tensorcas", "torch-cs-sha1", "speed"),
    Goal("rewrite", _RW, "tensorcas", "torch.save", "speed"),
    Goal("rewrite", _RW, "tensorcas", "safetensors", "speed"),
    Goal("partial", _P, "tensorcas", "hash-all+write-changed", "time", None, "hash-all+write-changed"),
    Goal("partial", _P, "tensorcas-bg", "hash-all+write-changed", "time", None, "hash-all+write-changed"),
    Goal("partial", _P, "tensorcas", "torch-cs-sha1", "speed"),
    Goal("partial", _P, "tensorcas", "torch.save", "speed"),
    Goal("partial", _P, "tensorcas", "safetensors", "speed"),
    # The goals are held against the faster of the two raw numpy readers (np.fromfile goes
    # through C stdio and is several times slower here); both are shown.
    Goal("read", _R, "tensorcas", "np.empty+readinto", "speed", 0.95, _NUMPY_READ),
    Goal("read", "read_storage, {n} x {mib} MiB", "tensorcas-read_storage", "np.empty+readinto", "speed", 0.95, _NUMPY_READ),
    Goal("read", _R, "tensorcas-verify", "np.empty+readinto", "speed", 0.6, _NUMPY_READ),
    Goal("read", _R, "tensorcas", "np.fromfile", "speed", None, _FROMFILE),
    Goal("read", _R, "tensorcas", "raw-read-fresh", "speed", None, "raw read() into new memory"),
    Goal("read", _R, "tensorcas", "raw-read", "speed", None, "raw read() into touched memory"),
    Goal("read", _R, "tensorcas", "torch-cs", "speed"),
    Goal("read", _R, "tensorcas", "torch.load", "speed"),
    Goal("read", _R, "tensorcas", "safetensors (pread)", "speed"),
    Goal("read", _R, "tensorcas", "safetensors (mmap)", "speed"),
    Goal("hash", _H, "tensorcas", "blake3-lib", "speed", 0.9, "BLAKE3 library"),
    Goal("hash", _H, "tensorcas", "torch-cs-sha1", "speed", 4.0, "PyTorch SHA-1 path"),
    Goal("hash", _H + " (the ceiling)", "blake3-lib", "torch-cs-sha1", "speed", None, "PyTorch SHA-1 path"),
    Goal("hash", "hash_storage, 4 x {mib} MiB", "tensorcas-4", "torch-cs-default-4", "speed", None, "PyTorch default path"),
    Goal("small", _S, "tensorcas", "torch-cs-sha1", "speed", 12.0, _TORCH_STABLE),
    Goal("small", "{n:,} small tensors, write", "tensorcas:write", "torch-cs-sha1:write", "speed", 12.0, _TORCH_STABLE),
    Goal("small", "{n:,} small tensors, read back", "tensorcas:read", "torch-cs-sha1:read", "speed", 12.0, _TORCH_STABLE),
    Goal("small", "{sub:,} small tensors, write + read back", "tensorcas-sub", "torch-cs-default-sub", "speed", 10.0, "PyTorch store (default)"),
    Goal("small", _S, "tensorcas-bg", "torch-cs-sha1", "speed", 10.0, _TORCH_STABLE),
    Goal("small", _S, "tensorcas", "raw-files", "speed", None, "one raw file per tensor"),
    Goal("small", _S, "tensorcas", "torch.save (one file)", "speed"),
    Goal("small", _S, "tensorcas", "safetensors (one file)", "speed"),
    Goal("lazy", "lazy: 1 x {mib} MiB vs 1 x 1 KiB", "tc-lazy-1-large", "tc-lazy-1-small", "time", 2.0, "1 KiB lazy read"),
    Goal("lazy", "lazy: {k} records vs 1 record", "tc-lazy-{k}-large", "tc-lazy-1-large", "time", None, "1-record lazy read"),
    Goal("lazy", "lazy: all {n} records vs 1 record", "tc-lazy-all", "tc-lazy-1-large", "time", None, "1-record lazy read"),
    Goal("lazy", _L, "tc-lazy-1-large", "tc-eager-1-large", "speed", None, "eager read"),
    Goal("lazy", _L, "tc-lazy-1-large", "torch.load-mmap-1-large", "speed", None, "torch.load(mmap=True)"),
    Goal("lazy", _L, "tc-lazy-1-large", "torch.load-1-large", "speed", None, "torch.load"),
    Goal("lazy", _L, "tc-lazy-1-large", "safetensors-1-large", "speed", None, "safetensors safe_open"),
)  # fmt: skip

#: Goals of rows that are not ratios between contenders.
MANY_WRITE_RATE = 25_000  # small tensors written per second, at least
MANY_LIST_SECONDS = 1.0  # listing every name with a fresh reader, at most
RSS_FRACTION = 0.05  # peak RSS increase while writing one large tensor, below this share of it


def apply_goals(res: Results, workload: str, **sizes: Any) -> None:
    """Add the rows of ``workload``'s goals, in table order (rows whose contenders did not run
    are left out)."""
    for g in GOALS:
        if g.workload == workload:
            ratio_row(
                res,
                workload,
                g.what.format(**sizes),
                g.ours.format(**sizes),
                g.ref,
                g.goal,
                g.ref_label,
                speed=g.kind == "speed",
            )
