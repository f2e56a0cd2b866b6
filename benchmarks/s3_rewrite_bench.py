"""Writing unchanged tensors again on S3: the looks at their blobs one at a time or at once.

    .venv/bin/python benchmarks/s3_rewrite_bench.py                  # moto on loopback
    .venv/bin/python benchmarks/s3_rewrite_bench.py --latency-ms 0 20 50

A save of mostly unchanged weights sends no bytes for them, but ``write_tensors`` still looks at
each stored blob twice: before its record (is it stored? it is marked in use) and after the
batch's last record (is it still there? the check against a concurrent gc).  On object storage
each look is a ``HEAD``.  The looks after the last record are asked at once where the backend
reads in parallel (``Backend.parallel_reads``); this script times the same rewrite with
``parallel_reads`` 1 and 8, through the tests' proxy (``s3proxy.FaultProxy``) holding every
``HEAD`` for the given latency, as a round trip to a service far away would.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from s3_bench import CREDENTIALS, _start_moto, create_bucket, one_or_eight_at_once

from s3proxy import FaultProxy  # the tests' proxy on loopback
from tensorcas import ContentStoreWriter
from tensorcas.store import open_backend

BUCKET = "tensorcas-rewrite"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tensors", type=int, default=16, help="1 MiB tensors rewritten")
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    server, endpoint = _start_moto()
    try:
        create_bucket(endpoint, BUCKET)
        url = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
        options = {**CREDENTIALS, "endpoint": endpoint, "allow_http": True}
        g = torch.Generator().manual_seed(0)
        tensors = [torch.randn(1 << 18, generator=g) for _ in range(args.tensors)]
        with ContentStoreWriter(open_backend(url, storage_options=options)) as writer:
            writer.write_tensors([(f"first/{i}", t) for i, t in enumerate(tensors)])
        print(f"{args.tensors} unchanged 1 MiB tensors written again; moto on loopback; medians of {args.repeat}")
        with FaultProxy(endpoint) as proxy:

            def rewrite(parallel: int, rep: int) -> float:
                backend = open_backend(url, storage_options={**options, "endpoint": proxy.endpoint})
                backend.parallel_reads = parallel
                with ContentStoreWriter(backend) as writer:
                    writer.write_tensor("warm", torch.zeros(1))  # the store is open, its logs read
                    items = [(f"again-{rep}-{parallel}/{i}", t) for i, t in enumerate(tensors)]
                    start = time.perf_counter()
                    writer.write_tensors(items)
                    return time.perf_counter() - start

            one_or_eight_at_once(proxy, args.latency_ms, "HEAD", args.repeat, rewrite)
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
