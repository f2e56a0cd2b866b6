"""gc on an S3 server: blobs moved aside by server-side copy against the same gc copying them
through the client (read, then written again), in one run.

    .venv/bin/python benchmarks/s3_gc_bench.py              # moto on loopback, 20 x 8 MiB, 3 runs
    .venv/bin/python benchmarks/s3_gc_bench.py --count 4 --mib 2 --repeat 1   # a quick look

Each run writes ``--count`` unreferenced float32 blobs of ``--mib`` MiB to a fresh prefix,
removes their names, and times ``gc(grace_seconds=0)``, which moves each blob aside, reads the
logs again and deletes it.  The two ways alternate; medians are compared.  moto keeps objects in
memory and is written in Python: the figures are a ratio between the two ways on the same
server, not a statement of S3's speed.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import torch
from s3_bench import CREDENTIALS, _start_moto, create_bucket

import tensorcas
from tensorcas import ContentStoreWriter
from tensorcas.backends.objectstore import ObjectStoreBackend
from tensorcas.store import open_backend


def _run(endpoint: str, bucket: str, count: int, mib: int, server_side: bool) -> float:
    url = f"s3://{bucket}/gc-{uuid.uuid4().hex[:8]}"
    options = {**CREDENTIALS, "endpoint": endpoint, "allow_http": True}
    with ContentStoreWriter(open_backend(url, storage_options=options)) as writer:
        for i in range(count):
            writer.write_tensor(f"t{i}", torch.full((mib << 18,), float(i)))
    tensorcas.rm(open_backend(url, storage_options=options), [f"t{i}" for i in range(count)])
    backend = open_backend(url, storage_options=options)
    assert isinstance(backend, ObjectStoreBackend)
    backend._copies = server_side  # off: the way of a service without a usable copy
    start = time.perf_counter()
    report = tensorcas.gc(backend, grace_seconds=0)
    elapsed = time.perf_counter() - start
    assert len(report.removed_blobs) == count, report
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    proc, endpoint = _start_moto()
    try:
        bucket = "tensorcas-gc-bench"
        create_bucket(endpoint, bucket)
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeat):
            for server_side in (False, True):
                times[server_side].append(
                    _run(endpoint, bucket, args.count, args.mib, server_side)
                )
        client, server = statistics.median(times[False]), statistics.median(times[True])
        print(f"gc of {args.count} x {args.mib} MiB unreferenced blobs, median of {args.repeat}:")
        print(f"  through the client   {client:8.3f} s")
        print(f"  server-side copy     {server:8.3f} s   ({client / server:.1f}x faster)")
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
