"""Opening a store of many logs on object storage: logs read one at a time against up to eight at
once (``Backend.parallel_reads``), side by side in one run.

    .venv/bin/python benchmarks/s3_open_bench.py                  # 40 logs, 0 and 20 ms per GET
    .venv/bin/python benchmarks/s3_open_bench.py --logs 100 --latency-ms 0 50

moto's S3 server runs on loopback in a process of its own; a proxy in front of it (the tests'
``s3proxy.FaultProxy``) holds every ``GET`` for the given latency, as a round trip to a service
would.  Each writer session adds one log of 20 small tensors.  Medians of ``--repeat`` opens,
alternating which goes first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import torch
from s3_bench import CREDENTIALS, _start_moto, create_bucket, one_or_eight_at_once

from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas.store import open_backend

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from s3proxy import FaultProxy  # the tests' proxy on loopback

BUCKET = "open-bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=int, default=40, help="writer sessions (one log each)")
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    server, endpoint = _start_moto()
    try:
        create_bucket(endpoint, BUCKET)
        url = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
        options = {**CREDENTIALS, "endpoint": endpoint, "allow_http": True}
        for i in range(args.logs):
            with ContentStoreWriter(open_backend(url, storage_options=options)) as writer:
                for j in range(20):
                    writer.write_tensor(f"s{i}/t{j}", torch.full((64,), float(j)))
        print(f"{args.logs} logs of 20 small tensors each, moto on loopback; medians of {args.repeat}")
        with FaultProxy(endpoint) as proxy:

            def open_store(parallel: int, rep: int) -> float:
                backend = open_backend(url, storage_options={**options, "endpoint": proxy.endpoint})
                backend.parallel_reads = parallel
                start = time.perf_counter()
                reader = ContentStoreReader(backend)
                elapsed = time.perf_counter() - start
                assert len(reader.list_tensors()) == 20 * args.logs
                return elapsed

            one_or_eight_at_once(proxy, args.latency_ms, "GET", args.repeat, open_store)
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
