"""tensorcas benchmark: the limits and the peers, on the same tensors, in one run.

    .venv/bin/python benchmarks/bench.py                 # full run (about 10 minutes)
    .venv/bin/python benchmarks/bench.py --quick         # small, fast run
    .venv/bin/python benchmarks/bench.py --only write,read --json out.json

Every contender of a workload is timed on the same tensors, round-robin (the order rotates from
one repetition to the next, so that a slow phase of a noisy machine does not hit only one of
them); ratios are computed from medians.  Store set-up and deletion are outside the timed region,
and ``os.sync()`` is called (untimed) after each timed write so that one contender's dirty pages
are not flushed during the next one's measurement.

Reads are from the page cache (dropping it needs privileges this script does not assume); the
raw ``read()`` limit is measured under the same conditions.

Workloads (``--only`` takes a comma-separated list of these):
    write    fresh store, 32 large float32 tensors (1 GiB; 128 MiB with --quick)
    rewrite  the same tensors written again into the same store, unchanged
    partial  3 of the 32 tensors (9.4% of the bytes) changed, the rest unchanged
    read     eager reads of the 32 tensors, also with verify=True
    hash     hash_storage against the BLAKE3 library and PyTorch's hash_storage
    small    5,000 small tensors written and read back (500 with --quick)
    many     100,000 small tensors (10,000 with --quick): write rate, listing, read rate
    lazy     open a store with mmap=True and read one tensor, against eager
    rss      peak RSS increase while writing one 4 GiB tensor (512 MiB with --quick)
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
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
from torch.utils import _content_store as torch_cs

import tensorcas

try:
    import safetensors
    from safetensors import safe_open
    from safetensors.torch import load_file as st_load_file
    from safetensors.torch import save_file as st_save_file
except ImportError:  # pragma: no cover - safetensors is in the bench extra
    safetensors = None

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MiB = 1 << 20
GiB = 1 << 30
WORKLOADS = ("write", "rewrite", "partial", "read", "hash", "small", "many", "lazy", "rss")
GBPS_WORKLOADS = ("write", "rewrite", "read", "hash")
CHANGED = (5, 16, 27)  # indices of the tensors changed in the "partial" workload


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


def has_background() -> bool:
    try:
        params = inspect.signature(tensorcas.ContentStoreWriter).parameters
    except (TypeError, ValueError):
        return False
    return "background" in params


def tc_writer(loc: str, background: bool) -> tensorcas.ContentStoreWriter:
    if background:
        return tensorcas.ContentStoreWriter(loc, background=True)  # type: ignore[call-arg]
    return tensorcas.ContentStoreWriter(loc)


def tc_finish(writer: Any) -> None:
    if hasattr(writer, "flush"):
        writer.flush()
    writer.close()


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


SYNC_SECONDS = [0.0]


def settle(cfg: Config) -> None:
    """Write dirty pages back (untimed), so that they do not slow down the next measurement."""
    if cfg.sync and hasattr(os, "sync"):
        t0 = time.perf_counter()
        os.sync()
        SYNC_SECONDS[0] += time.perf_counter() - t0


def run_cases(
    cfg: Config, res: Results, workload: str, cases: list[Case], reps: int | None = None
) -> None:
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


def speed_row(
    res: Results,
    workload: str,
    what: str,
    ours: str,
    ref: str,
    goal_min: float | None,
    ref_label: str | None = None,
) -> None:
    """Ours relative to ``ref`` as a speed: ref time / our time (above 1: we are faster)."""
    _ratio_row(res, workload, what, ours, ref, goal_min, ref_label, speed=True)


def time_row(
    res: Results,
    workload: str,
    what: str,
    ours: str,
    ref: str,
    goal_max: float | None,
    ref_label: str | None = None,
) -> None:
    """Ours relative to ``ref`` as a time: our time / ref time (below 1: we take less)."""
    _ratio_row(res, workload, what, ours, ref, goal_max, ref_label, speed=False)


def _ratio_row(
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


def raw_write_files(directory: str, views: dict[str, memoryview]) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, view in views.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(view)


def raw_read_files(directory: str, buffers: dict[str, bytearray] | dict[str, memoryview]) -> None:
    for name, buf in buffers.items():
        with open(os.path.join(directory, name), "rb", buffering=0) as f:
            f.readinto(buf)


def blake3_all(views: list[memoryview]) -> None:
    for view in views:
        blake3.blake3(view, max_threads=blake3.blake3.AUTO).digest()


def torch_cs_warmup(sizes: list[int]) -> float:
    """Compile PyTorch's default (non-stable) hash once per size class; returns seconds spent."""
    t0 = time.perf_counter()
    for n in sizes:
        torch_cs.hash_storage(torch.ones(n).untyped_storage())
    return time.perf_counter() - t0


def tc_write_all(loc: str, tensors: dict[str, torch.Tensor], background: bool = False) -> None:
    w = tc_writer(loc, background)
    for name, t in tensors.items():
        w.write_tensor(name, t)
    tc_finish(w)


def torch_cs_write_all(loc: str, tensors: dict[str, torch.Tensor], stable: bool) -> None:
    w = torch_cs.ContentStoreWriter(loc, stable_hash=stable)
    for name, t in tensors.items():
        w.write_tensor(name, t)


# -------------------------------------------------------------------------------------------------
# workloads


def wl_write(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "write"
    d = os.path.join(cfg.out, wl)
    views = {n: byte_view(t) for n, t in large.items()}
    res.nbytes[wl] = sum(v.nbytes for v in views.values())
    torch_cs_warmup([64, large[next(iter(large))].numel()])

    def target(kind: str) -> str:
        return os.path.join(d, kind)

    def case(
        name: str, fn: Callable[[str], None], reps: int | None = None, nbytes: int | None = None
    ) -> Case:
        return Case(
            name,
            lambda rep: fn(fresh(target(name))) or None,
            teardown=lambda rep: rm(target(name)),
            reps=reps,
            writes=True,
            nbytes=nbytes,
        )

    # PyTorch's default (compiled, non-stable) hash runs at tens of MB/s: it and tensorcas are
    # compared on the first 4 tensors only, so that the run stays within minutes.
    sub = dict(list(large.items())[:4])
    sub_bytes = sum(t.nbytes for t in sub.values())
    cases = [
        case("raw-write", lambda p: raw_write_files(p, views)),
        case("tensorcas", lambda p: tc_write_all(p, large)),
        case("torch-cs-sha1", lambda p: torch_cs_write_all(p, large, stable=True)),
        case("torch.save", lambda p: torch.save(large, p)),
        case("tensorcas-4", lambda p: tc_write_all(p, sub), nbytes=sub_bytes),
        case(
            "torch-cs-default-4",
            lambda p: torch_cs_write_all(p, sub, stable=False),
            reps=cfg.slow_reps,
            nbytes=sub_bytes,
        ),
    ]
    if has_background():
        cases.insert(2, case("tensorcas-bg", lambda p: tc_write_all(p, large, background=True)))
    if safetensors is not None:
        cases.append(case("safetensors", lambda p: st_save_file(large, p)))
    run_cases(cfg, res, wl, cases)
    what = f"fresh write, {len(large)} x {cfg.large_bytes // MiB} MiB"
    speed_row(res, wl, what, "tensorcas", "raw-write", 0.8, "raw write()")
    speed_row(res, wl, what, "tensorcas-bg", "raw-write", 0.8, "raw write()")
    for peer in ("torch-cs-sha1", "torch.save", "safetensors"):
        speed_row(res, wl, what, "tensorcas", peer, None)
    speed_row(
        res,
        wl,
        f"fresh write, 4 x {cfg.large_bytes // MiB} MiB",
        "tensorcas-4",
        "torch-cs-default-4",
        None,
        "PyTorch store (default)",
    )
    rm(d)


def populate(
    cfg: Config, d: str, large: dict[str, torch.Tensor], views: dict[str, memoryview]
) -> dict[str, str]:
    """One populated store or file per contender, for the rewrite and partial workloads."""
    paths = {
        "raw-write": os.path.join(d, "raw"),
        "tensorcas": os.path.join(d, "tc"),
        "torch-cs-sha1": os.path.join(d, "torch-cs"),
        "torch.save": os.path.join(d, "model.pt"),
    }
    fresh(d)
    raw_write_files(paths["raw-write"], views)
    tc_write_all(paths["tensorcas"], large)
    if has_background():
        paths["tensorcas-bg"] = os.path.join(d, "tc-bg")
        tc_write_all(paths["tensorcas-bg"], large, background=True)
    torch_cs_write_all(paths["torch-cs-sha1"], large, stable=True)
    torch.save(large, paths["torch.save"])
    if safetensors is not None:
        paths["safetensors"] = os.path.join(d, "model.safetensors")
        st_save_file(large, paths["safetensors"])
    settle(cfg)
    return paths


def wl_rewrite(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "rewrite"
    d = os.path.join(cfg.out, wl)
    views = {n: byte_view(t) for n, t in large.items()}
    res.nbytes[wl] = sum(v.nbytes for v in views.values())
    paths = populate(cfg, d, large, views)
    vlist = list(views.values())

    cases = [
        Case("hash-only (blake3)", lambda rep: blake3_all(vlist)),
        Case("tensorcas", lambda rep: tc_write_all(paths["tensorcas"], large), writes=True),
        Case(
            "torch-cs-sha1",
            lambda rep: torch_cs_write_all(paths["torch-cs-sha1"], large, True),
            writes=True,
        ),
        Case("torch.save", lambda rep: torch.save(large, paths["torch.save"]), writes=True),
    ]
    if "tensorcas-bg" in paths:
        cases.insert(
            2,
            Case(
                "tensorcas-bg",
                lambda rep: tc_write_all(paths["tensorcas-bg"], large, True),
                writes=True,
            ),
        )
    if "safetensors" in paths:
        cases.append(
            Case("safetensors", lambda rep: st_save_file(large, paths["safetensors"]), writes=True)
        )
    run_cases(cfg, res, wl, cases)
    what = "unchanged rewrite, same store"
    time_row(res, wl, what, "tensorcas", "hash-only (blake3)", 1.25, "hashing-alone")
    time_row(res, wl, what, "tensorcas-bg", "hash-only (blake3)", 1.25, "hashing-alone")
    for peer in ("torch-cs-sha1", "torch.save", "safetensors"):
        speed_row(res, wl, what, "tensorcas", peer, None)
    rm(d)


def wl_partial(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "partial"
    d = os.path.join(cfg.out, wl)
    views = {n: byte_view(t) for n, t in large.items()}
    paths = populate(cfg, d, large, views)
    names = list(large)
    changed = [names[i] for i in CHANGED if i < len(names)]
    res.nbytes[wl] = sum(large[n].nbytes for n in changed)
    res.note(
        wl,
        f"{len(changed)} of {len(names)} tensors changed ({100 * len(changed) / len(names):.1f}% of the bytes)",
    )
    # A different change per repetition, so that every repetition writes new content.
    variants: list[dict[str, torch.Tensor]] = []
    for rep in range(cfg.reps):
        v = dict(large)
        for n in changed:
            v[n] = large[n] + float(rep + 1)
        variants.append(v)
    vviews = [{n: byte_view(t) for n, t in v.items()} for v in variants]

    def limit(rep: int) -> None:
        # The least any deduplicating writer can do: hash everything, write the changed bytes.
        blake3_all(list(vviews[rep].values()))
        raw_write_files(os.path.join(d, f"limit-{rep}"), {n: vviews[rep][n] for n in changed})

    cases = [
        Case("hash-all+write-changed", limit, writes=True),
        Case("tensorcas", lambda rep: tc_write_all(paths["tensorcas"], variants[rep]), writes=True),
        Case(
            "torch-cs-sha1",
            lambda rep: torch_cs_write_all(paths["torch-cs-sha1"], variants[rep], True),
            writes=True,
        ),
        Case("torch.save", lambda rep: torch.save(variants[rep], paths["torch.save"]), writes=True),
    ]
    if "tensorcas-bg" in paths:
        cases.insert(
            2,
            Case(
                "tensorcas-bg",
                lambda rep: tc_write_all(paths["tensorcas-bg"], variants[rep], True),
                writes=True,
            ),
        )
    if "safetensors" in paths:
        cases.append(
            Case(
                "safetensors",
                lambda rep: st_save_file(variants[rep], paths["safetensors"]),
                writes=True,
            )
        )
    run_cases(cfg, res, wl, cases)
    what = f"{len(changed)}/{len(names)} tensors changed"
    time_row(res, wl, what, "tensorcas", "hash-all+write-changed", None, "hash-all+write-changed")
    time_row(
        res, wl, what, "tensorcas-bg", "hash-all+write-changed", None, "hash-all+write-changed"
    )
    for peer in ("torch-cs-sha1", "torch.save", "safetensors"):
        speed_row(res, wl, what, "tensorcas", peer, None)
    rm(d)


def wl_read(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "read"
    d = os.path.join(cfg.out, wl)
    views = {n: byte_view(t) for n, t in large.items()}
    res.nbytes[wl] = sum(v.nbytes for v in views.values())
    fresh(d)
    raw_dir = os.path.join(d, "raw")
    tc_dir = os.path.join(d, "tc")
    cs_dir = os.path.join(d, "torch-cs")
    pt = os.path.join(d, "model.pt")
    stf = os.path.join(d, "model.safetensors")
    raw_write_files(raw_dir, views)
    tc_write_all(tc_dir, large)
    torch_cs_write_all(cs_dir, large, stable=True)
    torch.save(large, pt)
    if safetensors is not None:
        st_save_file(large, stf)
    settle(cfg)
    buffers = {n: bytearray(v.nbytes) for n, v in views.items()}  # preallocated and touched
    names = list(large)

    def tc_read(verify: bool) -> None:
        r = tensorcas.ContentStoreReader(tc_dir, verify=verify)
        out = [r.read_tensor(n) for n in names]
        del out

    def cs_read() -> None:
        r = torch_cs.ContentStoreReader(cs_dir)
        out = [r.read_tensor(n) for n in names]
        del out

    def raw_read_fresh() -> None:
        # The same reads into newly allocated memory: what an eager reader that returns new
        # tensors pays at least (first-touch page faults of the destination).
        out = {n: torch.empty(v.nbytes, dtype=torch.uint8) for n, v in views.items()}
        raw_read_files(raw_dir, {n: byte_view(t) for n, t in out.items()})
        del out

    cases = [
        Case("raw-read", lambda rep: raw_read_files(raw_dir, buffers)),
        Case("raw-read-fresh", lambda rep: raw_read_fresh()),
        Case("tensorcas", lambda rep: tc_read(False)),
        Case("tensorcas-verify", lambda rep: tc_read(True)),
        Case("torch-cs", lambda rep: cs_read()),
        Case("torch.load", lambda rep: torch.load(pt, weights_only=True) and None),
    ]
    if safetensors is not None:
        # safetensors' default load_file maps the file (lazy); its "pread" backend reads it.
        if "backend" in inspect.signature(st_load_file).parameters:
            cases.append(
                Case("safetensors (pread)", lambda rep: st_load_file(stf, backend="pread") and None)
            )
        else:
            cases.append(Case("safetensors (mmap)", lambda rep: st_load_file(stf) and None))
    # One untimed pass so that every file is equally in the page cache.
    for c in cases:
        c.fn(-1)
    run_cases(cfg, res, wl, cases)
    what = f"eager read, {len(large)} x {cfg.large_bytes // MiB} MiB (page cache)"
    speed_row(res, wl, what, "tensorcas", "raw-read", 0.9, "raw read()")
    speed_row(res, wl, what, "tensorcas-verify", "raw-read", 0.7, "raw read()")
    speed_row(res, wl, what, "tensorcas", "raw-read-fresh", None, "raw read() into new memory")
    for peer in ("torch-cs", "torch.load", "safetensors (pread)", "safetensors (mmap)"):
        speed_row(res, wl, what, "tensorcas", peer, None)
    rm(d)


def wl_hash(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "hash"
    storages = [t.untyped_storage() for t in large.values()]
    views = [byte_view(t) for t in large.values()]
    res.nbytes[wl] = sum(v.nbytes for v in views)
    subset = storages[:4]
    sub_bytes = sum(s.nbytes() for s in subset)
    res.note(
        wl,
        "torch-cs-default and tensorcas-4 hash the first 4 tensors only (the compiled path is ~30 MB/s)",
    )
    warm = torch_cs_warmup([64, subset[0].nbytes() // 4])
    if warm > 0.5:
        res.note(wl, f"torch-cs-default warm-up (torch.compile, excluded): {warm:.1f} s")

    def tc_hash(sts: list[torch.UntypedStorage]) -> None:
        for s in sts:
            tensorcas.hash_storage(s)

    cases = [
        Case("blake3-lib", lambda rep: blake3_all(views)),
        Case("tensorcas", lambda rep: tc_hash(storages)),
        Case(
            "torch-cs-sha1",
            lambda rep: [torch_cs.hash_storage(s, stable_hash=True) for s in storages] and None,
        ),
        Case("tensorcas-4", lambda rep: tc_hash(subset), nbytes=sub_bytes),
        Case(
            "torch-cs-default-4",
            lambda rep: [torch_cs.hash_storage(s) for s in subset] and None,
            reps=cfg.slow_reps,
            nbytes=sub_bytes,
        ),
    ]
    run_cases(cfg, res, wl, cases)
    what = f"hash_storage, {len(storages)} x {cfg.large_bytes // MiB} MiB"
    speed_row(res, wl, what, "tensorcas", "blake3-lib", 0.9, "BLAKE3 library")
    speed_row(res, wl, what, "tensorcas", "torch-cs-sha1", 4.0, "PyTorch SHA-1 path")
    speed_row(
        res, wl, what + " (the ceiling)", "blake3-lib", "torch-cs-sha1", None, "PyTorch SHA-1 path"
    )
    speed_row(
        res,
        wl,
        f"hash_storage, 4 x {cfg.large_bytes // MiB} MiB",
        "tensorcas-4",
        "torch-cs-default-4",
        None,
        "PyTorch default path",
    )


def wl_small(cfg: Config, res: Results) -> None:
    wl = "small"
    d = os.path.join(cfg.out, wl)
    tensors = make_small(cfg.n_small, seed=7)
    views = {n: byte_view(t) for n, t in tensors.items()}
    res.nbytes[wl] = sum(v.nbytes for v in views.values())
    sub = dict(list(tensors.items())[: max(100, len(tensors) // 10)])
    res.note(
        wl,
        f"torch-cs-default and tensorcas-sub use the first {len(sub)} tensors only (the compiled hash is slow)",
    )
    warm = torch_cs_warmup([64, 100, 300, 700, 1024])
    if warm > 0.5:
        res.note(wl, f"torch-cs-default warm-up (torch.compile, excluded): {warm:.1f} s")

    def target(kind: str) -> str:
        return os.path.join(d, kind)

    def tc(
        rep: int, background: bool, which: dict[str, torch.Tensor] = tensors
    ) -> dict[str, float]:
        p = fresh(target("tc-bg" if background else "tc"))
        t0 = time.perf_counter()
        tc_write_all(p, which, background)
        t1 = time.perf_counter()
        r = tensorcas.ContentStoreReader(p)
        out = [r.read_tensor(n) for n in which]
        t2 = time.perf_counter()
        del out
        return {"write": t1 - t0, "read": t2 - t1}

    def cs(rep: int, stable: bool, which: dict[str, torch.Tensor] = tensors) -> dict[str, float]:
        p = fresh(target(f"cs-{stable}"))
        t0 = time.perf_counter()
        torch_cs_write_all(p, which, stable)
        t1 = time.perf_counter()
        r = torch_cs.ContentStoreReader(p)
        out = [r.read_tensor(n) for n in which]
        t2 = time.perf_counter()
        del out
        return {"write": t1 - t0, "read": t2 - t1}

    def raw(rep: int) -> dict[str, float]:
        p = fresh(target("raw"))
        bufs = {n: bytearray(v.nbytes) for n, v in views.items()}
        t0 = time.perf_counter()
        raw_write_files(p, views)
        t1 = time.perf_counter()
        raw_read_files(p, bufs)
        t2 = time.perf_counter()
        return {"write": t1 - t0, "read": t2 - t1}

    def one_file(
        rep: int, save: Callable[[str], None], load: Callable[[str], object]
    ) -> dict[str, float]:
        p = target("file")
        rm(p)
        os.makedirs(d, exist_ok=True)
        t0 = time.perf_counter()
        save(p)
        t1 = time.perf_counter()
        load(p)
        t2 = time.perf_counter()
        return {"write": t1 - t0, "read": t2 - t1}

    cases = [
        Case("tensorcas", lambda rep: tc(rep, False), writes=True),
        Case("raw-files", raw, writes=True),
        Case("torch-cs-sha1", lambda rep: cs(rep, True), writes=True, reps=cfg.slow_reps),
        Case("tensorcas-sub", lambda rep: tc(rep, False, sub), writes=True),
        Case(
            "torch-cs-default-sub", lambda rep: cs(rep, False, sub), writes=True, reps=cfg.slow_reps
        ),
        Case(
            "torch.save (one file)",
            lambda rep: one_file(
                rep, lambda p: torch.save(tensors, p), lambda p: torch.load(p, weights_only=True)
            ),
            writes=True,
        ),
    ]
    if has_background():
        cases.insert(1, Case("tensorcas-bg", lambda rep: tc(rep, True), writes=True))
    if safetensors is not None:
        cases.append(
            Case(
                "safetensors (one file)",
                lambda rep: one_file(rep, lambda p: st_save_file(tensors, p), st_load_file),
                writes=True,
            )
        )
    for c in cases:
        c.teardown = lambda rep: rm(d)
    run_cases(cfg, res, wl, cases)
    what = f"{cfg.n_small:,} small tensors, write + read back"
    speed_row(res, wl, what, "tensorcas", "torch-cs-sha1", 10.0, "PyTorch store (stable_hash=True)")
    speed_row(
        res,
        wl,
        f"{len(sub):,} small tensors, write + read back",
        "tensorcas-sub",
        "torch-cs-default-sub",
        10.0,
        "PyTorch store (default)",
    )
    speed_row(
        res, wl, what, "tensorcas-bg", "torch-cs-sha1", 10.0, "PyTorch store (stable_hash=True)"
    )
    speed_row(res, wl, what, "tensorcas", "raw-files", None, "one raw file per tensor")
    speed_row(res, wl, what, "tensorcas", "torch.save (one file)", None)
    speed_row(res, wl, what, "tensorcas", "safetensors (one file)", None)
    rm(d)


def wl_many(cfg: Config, res: Results) -> None:
    wl = "many"
    d = os.path.join(cfg.out, wl)
    tensors = make_small(cfg.n_many, seed=11)
    names = list(tensors)
    res.nbytes[wl] = sum(t.nbytes for t in tensors.values())
    n = len(names)

    def tc(rep: int, background: bool) -> dict[str, float]:
        p = fresh(os.path.join(d, "tc"))
        t0 = time.perf_counter()
        tc_write_all(p, tensors, background)
        t1 = time.perf_counter()
        settle(cfg)
        t2 = time.perf_counter()
        r = tensorcas.ContentStoreReader(p)
        listed = r.list_tensors()
        t3 = time.perf_counter()
        if len(listed) != n:
            raise SystemExit(f"listed {len(listed)} names, wrote {n}")
        if background:  # reading back is measured once, on the default writer's store
            return {"write": t1 - t0, "open+list": t3 - t2}
        out = [r.read_tensor(x) for x in names]
        t4 = time.perf_counter()
        del out
        return {"write": t1 - t0, "open+list": t3 - t2, "read": t4 - t3}

    # The background writer is measured on small tensors in "small"; here it would double the time.
    cases = [Case("tensorcas", lambda rep: tc(rep, False), teardown=lambda rep: rm(d), writes=True)]
    run_cases(cfg, res, wl, cases, reps=min(cfg.reps, 3))
    res.note(
        wl,
        "phases are timed separately; an os.sync() between write and listing is excluded from both",
    )
    for who in ("tensorcas", "tensorcas-bg"):
        if not res.has(wl, f"{who}:write"):
            continue
        w = res.med(wl, f"{who}:write")
        rate = n / w
        res.rows.append(
            Row(
                wl,
                f"{n:,} small tensors, write",
                who,
                w,
                None,
                None,
                rate,
                f"{rate:,.0f} tensors/s",
                ">= 20,000/s",
                rate >= 20_000,
            )
        )
        lst = res.med(wl, f"{who}:open+list")
        res.rows.append(
            Row(
                wl,
                f"list {n:,} names, fresh reader",
                who,
                lst,
                None,
                None,
                lst,
                f"{lst:.3f} s",
                "< 1 s",
                lst < 1.0,
            )
        )
        if not res.has(wl, f"{who}:read"):
            continue
        rd = res.med(wl, f"{who}:read")
        res.rows.append(
            Row(
                wl,
                f"{n:,} small tensors, read back",
                who,
                rd,
                None,
                None,
                n / rd,
                f"{n / rd:,.0f} tensors/s",
                "(info)",
                None,
            )
        )
    rm(d)


def wl_lazy(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "lazy"
    d = os.path.join(cfg.out, wl)
    fresh(d)
    tensors = dict(large)
    tensors["small"] = torch.rand(256)
    names = list(large)
    tc_dir = os.path.join(d, "tc")
    pt = os.path.join(d, "model.pt")
    stf = os.path.join(d, "model.safetensors")
    tc_write_all(tc_dir, tensors)
    torch.save(tensors, pt)
    if safetensors is not None:
        st_save_file(tensors, stf)
    settle(cfg)
    res.nbytes[wl] = sum(t.nbytes for t in tensors.values())
    k = min(8, len(names))
    inner = cfg.lazy_inner

    def tc(mmap: bool, which: list[str]) -> None:
        r = tensorcas.ContentStoreReader(tc_dir, mmap=mmap)
        out = [r.read_tensor(x) for x in which]
        del out

    def st_one() -> None:
        with safe_open(stf, framework="pt") as f:
            f.get_tensor(names[0])

    cases = [
        Case("tc-lazy-1-large", lambda rep: tc(True, names[:1]), inner=inner),
        Case("tc-lazy-1-small", lambda rep: tc(True, ["small"]), inner=inner),
        Case(f"tc-lazy-{k}-large", lambda rep: tc(True, names[:k]), inner=inner),
        Case("tc-lazy-all", lambda rep: tc(True, names), inner=inner),
        Case("tc-eager-1-large", lambda rep: tc(False, names[:1]), inner=max(1, inner // 4)),
        Case(
            "torch.load-mmap-1-large",
            lambda rep: torch.load(pt, mmap=True, weights_only=True)[names[0]] is None,
            inner=inner,
        ),
        Case("torch.load-1-large", lambda rep: torch.load(pt, weights_only=True)[names[0]] is None),
    ]
    if safetensors is not None:
        cases.append(Case("safetensors-1-large", lambda rep: st_one(), inner=max(1, inner // 4)))
    for c in cases:  # page cache and imports warm for everyone
        c.fn(-1)
    run_cases(cfg, res, wl, cases)
    res.note(wl, "each sample opens a fresh reader; a lazy read does not touch the tensor's bytes")
    one = f"open + read 1 tensor of {cfg.large_bytes // MiB} MiB"
    time_row(
        res,
        wl,
        f"lazy: 1 x {cfg.large_bytes // MiB} MiB vs 1 x 1 KiB",
        "tc-lazy-1-large",
        "tc-lazy-1-small",
        2.0,
        "1 KiB lazy read",
    )
    time_row(
        res,
        wl,
        f"lazy: {k} records vs 1 record",
        f"tc-lazy-{k}-large",
        "tc-lazy-1-large",
        None,
        "1-record lazy read",
    )
    time_row(
        res,
        wl,
        f"lazy: all {len(names)} records vs 1 record",
        "tc-lazy-all",
        "tc-lazy-1-large",
        None,
        "1-record lazy read",
    )
    speed_row(res, wl, one, "tc-lazy-1-large", "tc-eager-1-large", None, "eager read")
    speed_row(
        res, wl, one, "tc-lazy-1-large", "torch.load-mmap-1-large", None, "torch.load(mmap=True)"
    )
    speed_row(res, wl, one, "tc-lazy-1-large", "torch.load-1-large", None, "torch.load")
    speed_row(res, wl, one, "tc-lazy-1-large", "safetensors-1-large", None, "safetensors safe_open")
    rm(d)


def wl_rss(cfg: Config, res: Results) -> None:
    wl = "rss"
    d = os.path.join(cfg.out, wl)
    contenders = ["tensorcas", "raw-write"] + ([] if cfg.quick else ["torch.save", "torch-cs-sha1"])
    if has_background():
        contenders.insert(1, "tensorcas-bg")
    if safetensors is not None and not cfg.quick:
        contenders.append("safetensors")
    res.nbytes[wl] = cfg.rss_bytes
    probe = os.path.join(HERE, "rss_probe.py")
    found: dict[str, dict[str, Any]] = {}
    for name in contenders:
        fresh(d)
        os.makedirs(d, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, probe, name, str(cfg.rss_bytes), d],
            capture_output=True,
            text=True,
            check=False,
        )
        rm(d)
        settle(cfg)
        if proc.returncode != 0:
            res.note(wl, f"{name}: probe failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        found[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        res.samples.setdefault(wl, {})[name] = [found[name]["peak_increase"]]
        res.samples[wl][f"{name}:seconds"] = [found[name]["seconds"]]
        print(
            f"  [rss] {name}: +{found[name]['peak_increase'] / MiB:.1f} MiB",
            file=sys.stderr,
            flush=True,
        )
    res.extra["rss"] = found
    size = cfg.rss_bytes
    for name, f in found.items():
        frac = f["peak_increase"] / size
        goal = name.startswith("tensorcas")
        res.rows.append(
            Row(
                wl,
                f"peak RSS increase writing 1 x {size / GiB:g} GiB",
                name,
                f["peak_increase"],
                None,
                None,
                frac,
                f"{100 * frac:.1f}% of size ({f['peak_increase'] / MiB:.0f} MiB)",
                "< 5%" if goal else "(info)",
                (frac < 0.05) if goal else None,
                unit="B",
            )
        )


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
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
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
            nbytes = res.case_nbytes.get(wl, {}).get(
                name, res.nbytes.get(wl) if wl in GBPS_WORKLOADS else None
            )
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
    parts.append(
        table(
            [
                "workload",
                "measure",
                "tensorcas (median)",
                "reference (median)",
                "ratio",
                "goal",
                "result",
            ],
            rows,
        )
    )
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
        "safetensors": getattr(safetensors, "__version__", None)
        if safetensors is not None
        else None,
        "tensorcas": tensorcas.__version__,
        "background_writer": has_background(),
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
        src = subprocess.run(
            ["df", "--output=source,fstype", out], capture_output=True, text=True, check=False
        )
        info["filesystem"] = " ".join(src.stdout.split()[2:])
        dev = os.path.basename(info["filesystem"].split()[0]) if info["filesystem"] else ""
        rota = f"/sys/block/{dev}/queue/rotational"
        if dev and os.path.exists(rota):
            with open(rota) as f:
                info["disk_rotational"] = f.read().strip() == "1"
    except OSError:
        pass
    try:
        rev = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "src"],
            capture_output=True,
            text=True,
            check=False,
        )
        info["commit"] = rev.stdout.strip() + (
            "+uncommitted-src-changes" if dirty.stdout.strip() else ""
        )
    except OSError:
        pass
    return info


# -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="small sizes and 3 repetitions (about 2 minutes)"
    )
    ap.add_argument("--only", default="", help=f"comma-separated workloads: {','.join(WORKLOADS)}")
    ap.add_argument(
        "--reps", type=int, default=0, help="repetitions per contender (default 5, 3 with --quick)"
    )
    ap.add_argument(
        "--json", metavar="PATH", help="save every sample, ratio and the machine description"
    )
    ap.add_argument(
        "--out",
        default=os.path.join(REPO, "bench-out"),
        help="scratch directory (same filesystem as the repo)",
    )
    ap.add_argument("--no-sync", action="store_true", help="do not os.sync() between timed writes")
    args = ap.parse_args(argv)
    only = [w for w in args.only.split(",") if w] or list(WORKLOADS)
    unknown = sorted(set(only) - set(WORKLOADS))
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    args.out = os.path.join(os.path.abspath(args.out), f"run-{os.getpid()}")
    cfg = Config.from_args(args)
    os.makedirs(cfg.out, exist_ok=True)
    if os.stat(cfg.out).st_dev != os.stat(REPO).st_dev:
        print(f"warning: {cfg.out} is not on the repository's filesystem", file=sys.stderr)

    info = machine_info(cfg.out)
    print(
        f"tensorcas benchmark ({'quick' if cfg.quick else 'full'}): {cfg.reps} repetitions, medians; "
        f"{info.get('nproc')} CPUs, {info.get('memory_bytes', 0) / GiB:.0f} GiB RAM, torch {info['torch']}, "
        f"blake3 {info['blake3']}, background writer: {'yes' if info['background_writer'] else 'no'}",
        flush=True,
    )
    res = Results()
    started = time.perf_counter()
    # PyTorch's hash_storage imports torch._dynamo on its first call (seconds): do it untimed.
    torch_cs.hash_storage(torch.ones(1).untyped_storage(), stable_hash=True)
    large: dict[str, torch.Tensor] | None = None
    try:
        for wl in WORKLOADS:
            if wl not in only:
                continue
            t0 = time.perf_counter()
            print(f"-- {wl}", file=sys.stderr, flush=True)
            if wl in ("write", "rewrite", "partial", "read", "hash", "lazy") and large is None:
                large = make_large(cfg)
            if wl == "write":
                wl_write(cfg, res, large)
            elif wl == "rewrite":
                wl_rewrite(cfg, res, large)
            elif wl == "partial":
                wl_partial(cfg, res, large)
            elif wl == "read":
                wl_read(cfg, res, large)
            elif wl == "hash":
                wl_hash(cfg, res, large)
            elif wl == "small":
                wl_small(cfg, res)
            elif wl == "many":
                wl_many(cfg, res)
            elif wl == "lazy":
                wl_lazy(cfg, res, large)
            elif wl == "rss":
                wl_rss(cfg, res)
            res.extra.setdefault("workload_seconds", {})[wl] = time.perf_counter() - t0
            print(
                f"-- {wl} took {time.perf_counter() - t0:.0f} s (os.sync so far: {SYNC_SECONDS[0]:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(cfg.out, ignore_errors=True)
    total = time.perf_counter() - started
    print(report(res))
    failed = [r for r in res.rows if r.passed is False]
    passed = [r for r in res.rows if r.passed]
    print(f"\n{len(passed)} goals passed, {len(failed)} failed; total {total:.0f} s")
    if args.json:
        doc = {
            "machine": info,
            "config": cfg.__dict__,
            "total_seconds": total,
            "samples": res.samples,
            "nbytes": res.nbytes,
            "rows": [r.__dict__ for r in res.rows],
            "notes": res.notes,
            "extra": res.extra,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
