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
import json
import os
import shutil
import sys
import time

import torch
from benchlib.harness import (
    REPO,
    SYNC_SECONDS,
    Config,
    GiB,
    Results,
    machine_info,
    make_large,
    report,
)
from benchlib.registry import workloads
from torch.utils import _content_store as torch_cs


def main(argv: list[str] | None = None) -> int:
    WORKLOADS = workloads()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and 3 repetitions (about 2 minutes)")
    ap.add_argument("--only", default="", help=f"comma-separated workloads: {','.join(WORKLOADS)}")
    ap.add_argument("--reps", type=int, default=0, help="repetitions per contender (default 5, 3 with --quick)")
    ap.add_argument("--json", metavar="PATH", help="save every sample, ratio and the machine description")
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"), help="scratch directory (same filesystem as the repo)")
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
        for wl, registered in WORKLOADS.items():
            if wl not in only:
                continue
            t0 = time.perf_counter()
            print(f"-- {wl}", file=sys.stderr, flush=True)
            if registered.large and large is None:
                large = make_large(cfg)
            registered.run(cfg, res, large if registered.large and large is not None else {})
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
