"""DCP on tensorcas against DCP's own FileSystemWriter/Reader: same state dicts, one run.

    .venv/bin/python benchmarks/dcp_bench.py              # 256 MiB model (about 2 minutes)
    .venv/bin/python benchmarks/dcp_bench.py --mib 64     # smaller
    .venv/bin/python benchmarks/dcp_bench.py --json out.json

Both contenders are driven by ``torch.distributed.checkpoint.save``/``load`` in one process
(``no_dist=True``), on the same tensors, alternating which goes first from one repetition to the
next; ratios are computed from medians (tensorcas time / filesystem time, so < 1 means tensorcas
is faster).  ``os.sync()`` runs (untimed) after each timed save, and after each deletion of a contender's
output.  Both are measured without fsync
(``durable=False``, ``sync_files=False``) and then, for the first save, both with it.
torch runs on one intra-op thread (``torch.set_num_threads(1)``) for both: on a busy machine its
thread pool makes each ``copy_`` vary a hundredfold, which would drown the difference measured.

Rows:
    first save         a fresh store / a fresh directory (hashing included)
    load               dcp.load into a preallocated state dict, from the page cache
    95% unchanged      5% of the bytes changed, saved as a new checkpoint: time, bytes added
                       (without and with fsync)
    fine-tuning x10    frozen base, trained adapters and Adam state: total bytes on disk
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter

import tensorcas
import tensorcas.dcp

warnings.filterwarnings("ignore", message="torch.distributed is disabled")


def disk_bytes(path: str) -> int:
    """Apparent size of every file under ``path``."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(root, f)).st_size
    return total


def model_state(mib: int, seed: int = 0) -> dict[str, Any]:
    """A model-like state dict of ``mib`` MiB: 64 float32 matrices, plus a few small tensors and
    values (a step count, a learning rate)."""
    torch.manual_seed(seed)
    n = 64
    rows = max(1, mib * (1 << 20) // (n * 1024 * 4))
    layers = {f"layers.{i}.weight": torch.randn(rows, 1024) for i in range(n)}
    layers.update({f"layers.{i}.bias": torch.randn(1024) for i in range(n)})
    return {"model": layers, "step": 0, "lr": 1e-4}


def clone_state(sd: Any) -> Any:
    if isinstance(sd, dict):
        return {k: clone_state(v) for k, v in sd.items()}
    return sd.clone() if isinstance(sd, torch.Tensor) else sd


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    os.sync()
    return elapsed


def remove(path: str) -> None:
    """Delete a contender's output, untimed, and let the filesystem finish that work (freeing
    its blocks) before the next timed step, which would otherwise pay for it."""
    shutil.rmtree(path)
    os.sync()


class Contenders:
    """The two storage layers, each with a fresh location per call."""

    def __init__(self, root: str, durable: bool) -> None:
        self.root = root
        self.durable = durable
        self.count = 0

    def fresh(self, kind: str) -> str:
        self.count += 1
        path = os.path.join(self.root, f"{kind}-{self.count}")
        shutil.rmtree(path, ignore_errors=True)
        return path

    def save_tc(self, sd: Any, store: str, name: str) -> None:
        dcp.save(
            sd, storage_writer=tensorcas.dcp.Writer(store, name, durable=self.durable), no_dist=True
        )

    def save_fs(self, sd: Any, path: str) -> None:
        dcp.save(sd, storage_writer=FileSystemWriter(path, sync_files=self.durable), no_dist=True)


def median_ratio(tc: list[float], fs: list[float]) -> tuple[float, float, float]:
    a, b = statistics.median(tc), statistics.median(fs)
    return a, b, a / b


def run(mib: int, repeats: int, root: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    sd = model_state(mib)
    total = sum(t.nbytes for t in sd["model"].values())
    print(f"state dict: {len(sd['model'])} tensors, {total / 2**20:.1f} MiB; {repeats} repetitions")

    def row(name: str, tc: list[float], fs: list[float], **extra: Any) -> None:
        a, b, r = median_ratio(tc, fs)
        rows.append({"row": name, "tensorcas_s": a, "filesystem_s": b, "ratio": r, **extra})
        more = "".join(f"  {k}={v}" for k, v in extra.items())
        print(f"{name:<34} tensorcas {a:7.3f} s  filesystem {b:7.3f} s  ratio {r:5.2f}x{more}")

    kept: dict[str, str] = {}
    for durable in (False, True):
        c = Contenders(root, durable)
        tc_times, fs_times = [], []
        for i in range(repeats):
            order = [("tc", c.fresh(f"tc{int(durable)}")), ("fs", c.fresh(f"fs{int(durable)}"))]
            for kind, path in order if i % 2 == 0 else order[::-1]:
                if kind == "tc":
                    tc_times.append(timed(lambda p=path, c=c: c.save_tc(sd, p, "ckpt")))
                else:
                    fs_times.append(timed(lambda p=path, c=c: c.save_fs(sd, p)))
                if not durable and i == repeats - 1:
                    kept[kind] = path  # for the load and the partial save
                else:
                    remove(path)
        row(f"first save ({'fsync' if durable else 'no fsync'})", tc_times, fs_times)
    store, fs_dir = kept["tc"], kept["fs"]
    c = Contenders(root, False)

    target = clone_state(sd)
    tc_times, fs_times = [], []
    for i in range(repeats):
        for kind in ("tc", "fs") if i % 2 == 0 else ("fs", "tc"):
            for t in target["model"].values():
                t.zero_()
            if kind == "tc":
                tc_times.append(
                    timed(
                        lambda: dcp.load(
                            target, storage_reader=tensorcas.dcp.Reader(store, "ckpt"), no_dist=True
                        )
                    )
                )
            else:
                fs_times.append(
                    timed(
                        lambda: dcp.load(
                            target, storage_reader=FileSystemReader(fs_dir), no_dist=True
                        )
                    )
                )
            assert all(torch.equal(target["model"][k], v) for k, v in sd["model"].items())
    row("load", tc_times, fs_times)

    # 95% unchanged: 5% of the bytes (3 of the 64 large matrices and one bias) change.
    changed_names = [f"layers.{i}.weight" for i in (5, 20, 40)] + ["layers.7.bias"]
    changed_bytes = sum(sd["model"][k].nbytes for k in changed_names)
    for durable in (False, True):
        c = Contenders(root, durable)
        tc_times, fs_times, added = [], [], []
        for i in range(repeats):
            for k in changed_names:
                sd["model"][k].add_(1.0)
            before = disk_bytes(store)
            for kind in ("tc", "fs") if i % 2 == 0 else ("fs", "tc"):
                if kind == "tc":
                    tc_times.append(
                        timed(lambda n=f"partial-{int(durable)}-{i}", c=c: c.save_tc(sd, store, n))
                    )
                else:
                    path = c.fresh("fs")
                    fs_times.append(timed(lambda p=path, c=c: c.save_fs(sd, p)))
                    fs_bytes = disk_bytes(path)
                    remove(path)
            added.append(disk_bytes(store) - before)
        row(
            f"save, 95% unchanged ({'fsync' if durable else 'no fsync'})",
            tc_times,
            fs_times,
            changed_fraction=round(changed_bytes / total, 4),
            tensorcas_added_vs_changed=round(statistics.median(added) / changed_bytes, 3),
            filesystem_stored_vs_changed=round(fs_bytes / changed_bytes, 2),
        )
    c = Contenders(root, False)

    # Ten checkpoints of fine-tuning: frozen base (the state above), LoRA-like adapters trained
    # with Adam; each checkpoint holds base, adapters and optimizer state.
    tc_store, fs_root = c.fresh("ft-tc"), c.fresh("ft-fs")
    os.makedirs(fs_root)
    base = sd["model"]
    adapters = [torch.nn.Parameter(torch.zeros(1024, 16)) for _ in range(8)]
    optim = torch.optim.Adam(adapters, lr=1e-3)
    tc_times, fs_times = [], []
    for step in range(10):
        for p in adapters:
            p.grad = torch.randn_like(p)
        optim.step()
        ft = {
            "model": {**base, **{f"adapter.{i}": p for i, p in enumerate(adapters)}},
            "optim": optim.state_dict(),
            "step": step,
        }
        tc_times.append(timed(lambda s=step, ft=ft: c.save_tc(ft, tc_store, f"ft-{s}")))
        fs_times.append(
            timed(lambda s=step, ft=ft: c.save_fs(ft, os.path.join(fs_root, f"ft-{s}")))
        )
    tc_total, fs_total = disk_bytes(tc_store), disk_bytes(fs_root)
    row(
        "fine-tuning, 10 checkpoints (per save)",
        tc_times,
        fs_times,
        tensorcas_bytes=tc_total,
        filesystem_bytes=fs_total,
        bytes_ratio=round(tc_total / fs_total, 4),
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=256, help="size of the model state (MiB)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--dir", default=None, help="where to write (default: a temporary directory)"
    )
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = tempfile.mkdtemp(prefix="dcp-bench-", dir=args.dir)
    try:
        print(
            f"torch {torch.__version__}, tensorcas {tensorcas.__version__}, {os.cpu_count()} CPUs, in {root}"
        )
        rows = run(args.mib, args.repeats, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
