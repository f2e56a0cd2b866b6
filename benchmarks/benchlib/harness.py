"""The benchmark's harness: configuration, round-robin timing, results, ratio rows, the report.

Nothing here knows a contender or a workload: ``contenders`` wraps each peer in one adapter
shape, ``workloads`` holds the registry of workloads, ``goals`` the table of ratios and goals.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import blake3
import torch

import tensorcas

try:
    import safetensors
except ImportError:  # pragma: no cover - safetensors is in the bench extra
    safetensors = None

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # benchmarks/
REPO = os.path.dirname(HERE)
MiB = 1 << 20
GiB = 1 << 30
#: Workloads whose medians are also shown as GB/s.
GBPS_WORKLOADS = ("write", "rewrite", "read", "hash")


# -------------------------------------------------------------------------------------------------
# configuration


@dataclass
class Config:
    reps: int
    slow_reps: int  # for peers that take tens of seconds per repetition
    n_large: int
    large_bytes: int
    n_small: int
    n_many: int
    rss_bytes: int
    lazy_inner: int
    sync: bool
    out: str
    quick: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        reps = args.reps or (3 if args.quick else 5)
        if reps < 3:
            raise SystemExit("--reps must be at least 3 (ratios are taken from medians)")
        return cls(
            reps=reps,
            slow_reps=3,
            n_large=32,
            large_bytes=(4 if args.quick else 32) * MiB,
            n_small=500 if args.quick else 5_000,
            n_many=10_000 if args.quick else 100_000,
            rss_bytes=(512 * MiB) if args.quick else (4 * GiB),
            lazy_inner=10 if args.quick else 20,
            sync=not args.no_sync,
            out=args.out,
            quick=args.quick,
        )



# -------------------------------------------------------------------------------------------------
# measurement


@dataclass
class Case:
    """One contender of one workload.  ``fn(rep)`` is timed; it may return a dict of phase times
    (seconds), which are kept as samples of ``name:phase``."""

    name: str
    fn: Callable[[int], dict[str, float] | None]
    setup: Callable[[int], None] | None = None
    teardown: Callable[[int], None] | None = None
    reps: int | None = None
    inner: int = 1  # the timed function runs this many times per sample; the sample is the mean
    writes: bool = False  # sync after it (untimed)
    nbytes: int | None = None  # bytes it processes, where that differs from the workload's


@dataclass
class Row:
    workload: str
    what: str
    ours: str
    ours_value: float
    ref: str | None
    ref_value: float | None
    ratio: float | None
    ratio_text: str
    goal: str
    passed: bool | None
    unit: str = "s"


@dataclass
class Results:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    nbytes: dict[str, int] = field(default_factory=dict)
    case_nbytes: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def med(self, workload: str, name: str) -> float:
        return statistics.median(self.samples[workload][name])

    def has(self, workload: str, name: str) -> bool:
        return bool(self.samples.get(workload, {}).get(name))

    def note(self, workload: str, text: str) -> None:
        self.notes.setdefault(workload, []).append(text)


#: Seconds spent in os.sync() between timed writes (untimed, reported at the end).
SYNC_SECONDS = [0.0]


def settle(cfg: Config) -> None:
    """Write dirty pages back (untimed), so that they do not slow down the next measurement."""
    if cfg.sync and hasattr(os, "sync"):
        t0 = time.perf_counter()
        os.sync()
        SYNC_SECONDS[0] += time.perf_counter() - t0


def run_cases(cfg: Config, res: Results, workload: str, cases: list[Case], reps: int | None = None) -> None:
    reps = reps or cfg.reps
    samples = res.samples.setdefault(workload, {})
    for case in cases:
        if case.nbytes is not None:
            res.case_nbytes.setdefault(workload, {})[case.name] = case.nbytes
    most = max(c.reps or reps for c in cases)
    # Freeze what exists now (torch's and dynamo's modules are a large heap), so that the
    # collection before each sample only walks what the contenders allocate.
    gc.collect()
    gc.freeze()
    for rep in range(most):
        order = cases[rep % len(cases) :] + cases[: rep % len(cases)]
        for case in order:
            if rep >= (case.reps or reps):
                continue
            if case.setup is not None:
                case.setup(rep)
            gc.collect()
            phases: dict[str, float] = {}
            t0 = time.perf_counter()
            for _ in range(case.inner):
                phases = case.fn(rep) or {}
            elapsed = (time.perf_counter() - t0) / case.inner
            samples.setdefault(case.name, []).append(elapsed)
            for phase, seconds in phases.items():
                samples.setdefault(f"{case.name}:{phase}", []).append(seconds)
            if case.teardown is not None:
                case.teardown(rep)
            if case.writes:
                settle(cfg)
        print(f"  [{workload}] repetition {rep + 1}/{most} done", file=sys.stderr, flush=True)


def ratio_row(
    res: Results,
    workload: str,
    what: str,
    ours: str,
    ref: str,
    goal: float | None,
    ref_label: str | None,
    *,
    speed: bool,
) -> None:
    """A row comparing two contenders' medians: as a speed (ref time / our time, above 1: we are
    faster) or as a time (our time / ref time, below 1: we take less).  Skipped if either did
    not run."""
    if not (res.has(workload, ours) and res.has(workload, ref)):
        return
    o, r = res.med(workload, ours), res.med(workload, ref)
    ratio = r / o if speed else o / r
    kind, sign = ("speed", ">=") if speed else ("time", "<=")
    passed = None if goal is None else (ratio >= goal if speed else ratio <= goal)
    res.rows.append(
        Row(
            workload,
            what,
            ours,
            o,
            ref,
            r,
            ratio,
            f"{ratio:.2f}x {ref_label or ref} {kind}",
            f"{sign} {goal:g}x" if goal is not None else "(info)",
            passed,
        )
    )


# -------------------------------------------------------------------------------------------------
# data and helpers


def byte_view(t: torch.Tensor) -> memoryview:
    """A zero-copy byte view of a contiguous CPU tensor."""
    return memoryview(t.detach().numpy()).cast("B")


def make_large(cfg: Config) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1234)
    n = cfg.large_bytes // 4
    return {f"layer{i:02d}.weight": torch.rand(n, generator=gen) for i in range(cfg.n_large)}


def make_small(count: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(64, 1025, (count,), generator=gen).tolist()
    return {f"op{i:06d}.out": torch.rand(s, generator=gen) for i, s in enumerate(sizes)}


def fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def rm(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)



# -------------------------------------------------------------------------------------------------
# reporting


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "B":
        return f"{v / MiB:.0f} MiB"
    return fmt_time(v)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def report(res: Results) -> str:
    parts = ["", "== medians per contender (seconds; GB/s where the workload has a byte size) =="]
    rows = []
    for wl, by_name in res.samples.items():
        if wl == "rss":
            continue
        for name, xs in by_name.items():
            m = statistics.median(xs)
            nbytes = res.case_nbytes.get(wl, {}).get(name, res.nbytes.get(wl) if wl in GBPS_WORKLOADS else None)
            gbps = f"{nbytes / m / 1e9:.2f}" if nbytes and ":" not in name and m > 0 else ""
            spread = f"{fmt_time(min(xs))} .. {fmt_time(max(xs))}"
            rows.append([wl, name, fmt_time(m), spread, str(len(xs)), gbps])
    parts.append(table(["workload", "contender", "median", "min .. max", "n", "GB/s"], rows))
    parts.append("")
    parts.append("== ratios and goals ==")
    rows = []
    for r in res.rows:
        verdict = "PASS" if r.passed else ("FAIL" if r.passed is not None else "")
        rows.append(
            [
                r.workload,
                r.what,
                f"{r.ours} {fmt_value(r.ours_value, r.unit)}",
                f"{r.ref} {fmt_value(r.ref_value, r.unit)}" if r.ref else "-",
                r.ratio_text,
                r.goal,
                verdict,
            ]
        )
    parts.append(table(["workload", "measure", "tensorcas (median)", "reference (median)", "ratio", "goal", "result"], rows))
    for wl, notes in res.notes.items():
        for n in notes:
            parts.append(f"note [{wl}]: {n}")
    return "\n".join(parts)


def machine_info(out: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "blake3": getattr(blake3, "__version__", "?"),
        "safetensors": getattr(safetensors, "__version__", None) if safetensors is not None else None,
        "tensorcas": tensorcas.__version__,
        "background_writer": True,
    }
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        src = subprocess.run(["df", "--output=source,fstype", out], capture_output=True, text=True, check=False)
        info["filesystem"] = " ".join(src.stdout.split()[2:])
        dev = os.path.basename(info["filesystem"].split()[0]) if info["filesystem"] else ""
        rota = f"/sys/block/{dev}/queue/rotational"
        if dev and os.path.exists(rota):
            with open(rota) as f:
                info["disk_rotational"] = f.read().strip() == "1"
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "src"], capture_output=True, text=True, check=False)
        info["commit"] = rev.stdout.strip() + ("+uncommitted-src-changes" if dirty.stdout.strip() else "")
    except OSError:
        pass
    return info
