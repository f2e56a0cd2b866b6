"""Profile one tensorcas operation of the benchmark under cProfile and print the hot spots.

    .venv/bin/python benchmarks/profile_ops.py write            # fresh write, 32 x 32 MiB
    .venv/bin/python benchmarks/profile_ops.py many-write --n 100000
    .venv/bin/python benchmarks/profile_ops.py read --quick --top 25

Operations: write, rewrite, read, read-verify, hash, small, many-write, many-list, many-read.
Set-up (making tensors, writing the store to read) is outside the profile.  Native code shows up
as the Python-visible call that entered it (``os.write``, ``blake3.update``, ``ctypes.string_at``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys

import torch
from benchlib.contenders import TENSORCAS
from benchlib.harness import REPO, MiB, make_small

import tensorcas

OPS = ("write", "rewrite", "read", "read-verify", "hash", "small", "many-write", "many-list", "many-read")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("op", choices=OPS)
    ap.add_argument("--quick", action="store_true", help="4 MiB tensors instead of 32 MiB")
    ap.add_argument("--n", type=int, default=0, help="number of small tensors (small: 5,000; many-*: 100,000)")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--sort", default="tottime", choices=("tottime", "cumulative"))
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"))
    args = ap.parse_args()
    d = os.path.join(os.path.abspath(args.out), f"profile-{os.getpid()}")
    os.makedirs(d, exist_ok=True)
    store = os.path.join(d, "store")
    large_bytes = (4 if args.quick else 32) * MiB

    def large() -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(1234)
        return {f"layer{i:02d}.weight": torch.rand(large_bytes // 4, generator=gen) for i in range(32)}

    prof = cProfile.Profile()
    try:
        if args.op in ("write", "rewrite", "read", "read-verify", "hash"):
            tensors = large()
            if args.op != "write" and args.op != "hash":
                TENSORCAS.write(store, tensors)
            if args.op in ("write", "rewrite"):
                prof.runcall(TENSORCAS.write, store, tensors)
            elif args.op == "hash":
                prof.runcall(lambda: [tensorcas.hash_storage(t.untyped_storage()) for t in tensors.values()])
            else:
                verify = args.op == "read-verify"
                r0 = tensorcas.ContentStoreReader(store)  # page cache warm
                [r0.read_tensor(n) for n in tensors]
                del r0

                def read() -> None:
                    r = tensorcas.ContentStoreReader(store, verify=verify)
                    out = [r.read_tensor(n) for n in tensors]
                    del out

                prof.runcall(read)
        else:
            n = args.n or (5_000 if args.op == "small" else 100_000)
            tensors = make_small(n, seed=7)
            if args.op in ("small", "many-write"):

                def write_read() -> None:
                    TENSORCAS.write(store, tensors)
                    if args.op == "small":
                        r = tensorcas.ContentStoreReader(store)
                        out = [r.read_tensor(x) for x in tensors]
                        del out

                prof.runcall(write_read)
            else:
                TENSORCAS.write(store, tensors)
                if args.op == "many-list":
                    prof.runcall(lambda: tensorcas.ContentStoreReader(store).list_tensors())
                else:
                    r = tensorcas.ContentStoreReader(store)

                    def read_all() -> None:
                        out = [r.read_tensor(x) for x in tensors]
                        del out

                    prof.runcall(read_all)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    total = stats.total_tt  # type: ignore[attr-defined]
    stats.sort_stats(args.sort).print_stats(args.top)
    print(f"{args.op}: {total:.3f} s profiled")
    print(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
