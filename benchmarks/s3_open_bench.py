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
import socket
import statistics
import subprocess
import sys
import time
import uuid

import torch

from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas.store import open_backend

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from s3proxy import FaultProxy  # the tests' proxy on loopback

BUCKET = "open-bench"
KEYS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1", "allow_http": True}


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("moto's server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=int, default=40, help="writer sessions (one log each)")
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import boto3

    server, endpoint = start_moto()
    try:
        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        ).create_bucket(Bucket=BUCKET)
        url = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
        options = {**KEYS, "endpoint": endpoint}
        for i in range(args.logs):
            with ContentStoreWriter(open_backend(url, storage_options=options)) as writer:
                for j in range(20):
                    writer.write_tensor(f"s{i}/t{j}", torch.full((64,), float(j)))
        print(f"{args.logs} logs of 20 small tensors each, moto on loopback; medians of {args.repeat}")
        with FaultProxy(endpoint) as proxy:
            for latency in args.latency_ms:
                proxy.stall_seconds = latency / 1000
                if latency:
                    proxy.fail("stall", when=lambda method, path: method == "GET")
                else:
                    proxy.heal()
                times: dict[int, list[float]] = {1: [], 8: []}
                for rep in range(args.repeat):
                    for parallel in (1, 8) if rep % 2 == 0 else (8, 1):
                        backend = open_backend(url, storage_options={**options, "endpoint": proxy.endpoint})
                        backend.parallel_reads = parallel
                        start = time.perf_counter()
                        reader = ContentStoreReader(backend)
                        times[parallel].append(time.perf_counter() - start)
                        assert len(reader.list_tensors()) == 20 * args.logs
                one, eight = statistics.median(times[1]), statistics.median(times[8])
                print(
                    f"{latency:5.0f} ms per GET   one at a time {one * 1e3:8.1f} ms   "
                    f"8 at once {eight * 1e3:8.1f} ms   {one / eight:5.2f}x faster"
                )
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
