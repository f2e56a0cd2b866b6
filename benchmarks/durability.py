"""What ``durable=True`` costs: the same writes with and without fsync, side by side.

Two workloads: many small tensors (each write then fsyncs its pack or blob, its log line and
possibly a directory) and one large tensor (one fsync after 64 MiB of data).  Each is run several
times into a fresh store per run; the script prints the median seconds of each mode and their
ratio.  The numbers depend on the disk and filesystem: run it where the stores will live.

    python benchmarks/durability.py [--dir DIR] [--repeat N] [--small N] [--large-mib N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from tensorcas import ContentStoreWriter


def _time_once(root: str, durable: bool, write: Callable[[ContentStoreWriter], None]) -> float:
    loc = tempfile.mkdtemp(dir=root)
    try:
        start = time.perf_counter()
        with ContentStoreWriter(os.path.join(loc, "store"), durable=durable) as writer:
            write(writer)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(loc, ignore_errors=True)


def _median(
    root: str, repeat: int, durable: bool, write: Callable[[ContentStoreWriter], None]
) -> float:
    return statistics.median(_time_once(root, durable, write) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", default=None, help="where to create the stores (default: a temp dir)"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--small", type=int, default=200, help="number of small tensors")
    parser.add_argument("--large-mib", type=int, default=64, help="size of the large tensor")
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    small = [torch.randn(256, generator=g) for _ in range(args.small)]
    large = torch.randn(args.large_mib * (1 << 20) // 4, generator=g)

    def write_small(writer: ContentStoreWriter) -> None:
        for i, t in enumerate(small):
            writer.write_tensor(f"small/{i}", t)

    def write_large(writer: ContentStoreWriter) -> None:
        writer.write_tensor("large", large)

    root = tempfile.mkdtemp(dir=args.dir, prefix="tensorcas-durability-")
    try:
        print(f"stores under {root}; median of {args.repeat} runs each")
        print(f"{'workload':<28}{'default s':>12}{'durable s':>12}{'ratio':>8}")
        for label, write in (
            (f"{args.small} x 1 KiB tensors", write_small),
            (f"1 x {args.large_mib} MiB tensor", write_large),
        ):
            fast = _median(root, args.repeat, False, write)
            safe = _median(root, args.repeat, True, write)
            print(f"{label:<28}{fast:>12.4f}{safe:>12.4f}{safe / fast:>7.1f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
