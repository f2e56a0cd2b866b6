"""A series of checkpoints saved by one process: does a save cost more as the store fills up?

    .venv/bin/python benchmarks/checkpoint_series.py              # a local store, 40 saves
    .venv/bin/python benchmarks/checkpoint_series.py --s3         # moto's S3 server on loopback
    .venv/bin/python benchmarks/checkpoint_series.py --saves 200

Two stores get the same series of ``tensorcas.save_state_dict`` saves (a 32-tensor state dict of
4 MiB; one small tensor changes each step), step by step, alternating which goes first:

    kept     as a training job saves: the process keeps the store (and, on a local store, its
             writer) open from one save to the next (``tensorcas.dcp.opened``)
    afresh   every save opens the store afresh (``opened.forget(loc)`` first), reading every log
             of every earlier checkpoint, as each save did before stores were kept

It prints the median time of the first and the last five saves of each, and how many logs each
store holds at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings

import torch

import tensorcas
from tensorcas.dcp import opened
from tensorcas.store import open_backend

warnings.filterwarnings("ignore", message="torch.distributed is disabled")


def state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {f"layer{i}.weight": torch.randn(256, 256, generator=g) for i in range(16)}
    sd.update({f"layer{i}.bias": torch.randn(256, generator=g) for i in range(16)})
    return sd


def run(locs: dict[str, str], saves: int) -> None:
    sd = state_dict()
    times: dict[str, list[float]] = {kind: [] for kind in locs}
    for step in range(saves):
        sd["layer0.bias"].add_(1.0)
        kinds = list(locs) if step % 2 == 0 else list(locs)[::-1]
        for kind in kinds:
            if kind == "afresh":
                opened.forget(locs[kind])
            start = time.perf_counter()
            tensorcas.save_state_dict(locs[kind], f"step-{step}", sd)
            times[kind].append(time.perf_counter() - start)
    opened.forget()
    for kind, loc in locs.items():
        first = statistics.median(times[kind][:5])
        last = statistics.median(times[kind][-5:])
        logs = sum(1 for _ in open_backend(loc).list("logs/"))
        print(
            f"{kind:<7} first 5 saves {first * 1000:7.1f} ms   last 5 saves {last * 1000:7.1f} ms"
            f"   ({last / first:4.2f}x)   logs at the end: {logs}"
        )
    kept, afresh = statistics.median(times["kept"][-5:]), statistics.median(times["afresh"][-5:])
    print(f"last 5 saves, kept / afresh: {kept / afresh:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--saves", type=int, default=40)
    parser.add_argument("--s3", action="store_true", help="moto's S3 server on loopback")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.s3:
        from s3_bench import CREDENTIALS, _start_moto, create_bucket

        server, endpoint = _start_moto()
        try:
            os.environ.update(
                {
                    "AWS_ENDPOINT_URL": endpoint,
                    "AWS_ACCESS_KEY_ID": CREDENTIALS["access_key_id"],
                    "AWS_SECRET_ACCESS_KEY": CREDENTIALS["secret_access_key"],
                    "AWS_DEFAULT_REGION": CREDENTIALS["region"],
                }
            )
            bucket = "tensorcas-series"
            create_bucket(endpoint, bucket)
            run_id = uuid.uuid4().hex[:8]
            print(f"moto's S3 server on loopback, {args.saves} saves")
            run({k: f"s3://{bucket}/{run_id}-{k}" for k in ("kept", "afresh")}, args.saves)
        finally:
            server.terminate()
            server.wait()
        return
    root = tempfile.mkdtemp(prefix="series-")
    try:
        print(f"a local store in {root}, {args.saves} saves")
        run({k: os.path.join(root, k) for k in ("kept", "afresh")}, args.saves)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
