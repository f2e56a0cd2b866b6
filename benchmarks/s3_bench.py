"""Object-storage benchmark: tensorcas on an S3 server against the raw obstore client doing the
same puts and gets on the same server, in one run.

    .venv/bin/python benchmarks/s3_bench.py            # moto's server on loopback, 8 x 16 MiB
    .venv/bin/python benchmarks/s3_bench.py --quick    # 4 x 8 MiB
    .venv/bin/python benchmarks/s3_bench.py --endpoint http://host:9000 --bucket b   # a real one

By default it starts moto's S3 server (``moto[server]``) in a process of its own on 127.0.0.1, so
that the server does not share the client's interpreter.  moto is written in Python and keeps
objects in memory: on a small machine it, not the client, limits throughput, so the figures are
ratios between the two clients on the same server, not a statement of S3's speed.

Rows:
    write    fresh prefix: tensorcas writes N float32 tensors / obstore.put of the same bytes
             (the same request plan) / boto3 put_object (for the choice of client)
    read     tensorcas reads them back (eager) / obstore.get of the same objects / boto3
    new      the requests of writing the tensors into a new store (the store created, each
             blob put, its record appended and the blob checked after it, the log closed)
    rewrite  the same tensors written again, unchanged: requests by kind and bytes sent (the
             goal: no data sent, only the requests that find each blob stored)
    read     (last line) the requests one reader makes to open the store and read them all

tensorcas's backend is opened (as ``open_backend`` opens a URL) before it is timed, as the raw
client is made before it is; a read's time includes opening the store (reading its logs).

Each contender runs ``--repeat`` times, alternating; medians are compared.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import obstore
import torch

from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas.backends import Backend
from tensorcas.backends.objectstore import MULTIPART_THRESHOLD, PART_SIZE
from tensorcas.store import open_backend

CREDENTIALS = {"access_key_id": "bench", "secret_access_key": "bench", "region": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto's server did not start")


def create_bucket(endpoint: str, bucket: str) -> None:
    """Make ``bucket`` on the S3 server at ``endpoint`` (with boto3 and the bench's keys)."""
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=CREDENTIALS["region"],
        aws_access_key_id=CREDENTIALS["access_key_id"],
        aws_secret_access_key=CREDENTIALS["secret_access_key"],
    ).create_bucket(Bucket=bucket)


def one_or_eight_at_once(
    proxy: Any, latencies_ms: list[float], method: str, repeat: int, timed: Callable[[int, int], float]
) -> None:
    """For each latency (the tests' ``FaultProxy`` holding every ``method`` request that long,
    as a round trip to a service would), time ``timed(parallel_reads, repetition)`` with a
    backend reading 1 and 8 at once, alternating which goes first, and print the medians."""
    for latency in latencies_ms:
        proxy.stall_seconds = latency / 1000
        if latency:
            proxy.fail("stall", when=lambda m, path: m == method)
        else:
            proxy.heal()
        times: dict[int, list[float]] = {1: [], 8: []}
        for rep in range(repeat):
            for parallel in (1, 8) if rep % 2 == 0 else (8, 1):
                times[parallel].append(timed(parallel, rep))
        one, eight = statistics.median(times[1]), statistics.median(times[8])
        print(
            f"{latency:5.0f} ms per {method:<4}   one at a time {one * 1e3:8.1f} ms   "
            f"8 at once {eight * 1e3:8.1f} ms   {one / eight:5.2f}x faster"
        )


def _median_time(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class _Counting:
    """Counts the obstore calls made (and the bytes put) while it is active."""

    NAMES = ("put", "get", "get_range", "head", "list", "delete")

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.bytes_put: Counter[str] = Counter()  # by kind: blobs, packs, logs
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> _Counting:
        for name in self.NAMES:
            original = getattr(obstore, name)
            self._saved[name] = original

            def wrapper(
                *args: Any, _name: str = name, _original: Any = original, **kwargs: Any
            ) -> Any:
                self.calls[_name] += 1
                if _name == "put":
                    data, kind = args[2], str(args[1]).split("/", 1)[0]
                    if isinstance(data, (bytes, bytearray, memoryview)):
                        self.bytes_put[kind] += memoryview(data).nbytes
                    else:
                        data = list(data)
                        self.bytes_put[kind] += sum(memoryview(d).nbytes for d in data)
                        args = (*args[:2], data, *args[3:])
                return _original(*args, **kwargs)

            setattr(obstore, name, wrapper)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._saved.items():
            setattr(obstore, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--count", type=int, default=None, help="tensors per run")
    parser.add_argument("--mib", type=int, default=None, help="MiB per tensor")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--endpoint", default=None, help="an S3 endpoint (default: moto on loopback)"
    )
    parser.add_argument("--bucket", default="tensorcas-bench")
    args = parser.parse_args()
    count = args.count or (4 if args.quick else 8)
    mib = args.mib or (8 if args.quick else 16)

    server = None
    endpoint = args.endpoint
    if endpoint is None:
        server, endpoint = _start_moto()
    try:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=CREDENTIALS["access_key_id"],
            aws_secret_access_key=CREDENTIALS["secret_access_key"],
            region_name=CREDENTIALS["region"],
        )
        try:
            client.create_bucket(Bucket=args.bucket)
        except Exception:
            pass  # there already
        options = {**CREDENTIALS, "endpoint": endpoint, "allow_http": True}

        def raw_client() -> Any:
            return obstore.store.S3Store(
                args.bucket, client_options={"allow_http": True}, endpoint=endpoint, **CREDENTIALS
            )

        tensors = [
            torch.randn(mib << 18, generator=torch.Generator().manual_seed(i)) for i in range(count)
        ]
        views = [memoryview(t.numpy()).cast("B") for t in tensors]
        total = count * (mib << 20)

        times: dict[str, list[float]] = {
            "tc write": [],
            "raw write": [],
            "tc read": [],
            "raw read": [],
            "boto3 write": [],
            "boto3 read": [],
        }
        for rep in range(args.repeat):
            run = uuid.uuid4().hex[:8]
            url = f"s3://{args.bucket}/bench-{run}"

            # Each client is made afresh, before it is timed, for each row and repetition (so
            # none reuses connections another row opened): tensorcas's as ``open_backend`` opens
            # a URL (logs and packs are the only keys that may be segmented), obstore's S3Store.
            write_backend = open_backend(url, storage_options=options)
            read_backend = open_backend(url, storage_options=options)
            raw_writer, raw_reader = raw_client(), raw_client()

            def tc_write(backend: Backend = write_backend) -> None:
                with ContentStoreWriter(backend) as writer:
                    for i, t in enumerate(tensors):
                        writer.write_tensor(f"t{i}", t)

            def raw_write(run: str = run, raw: Any = raw_writer) -> None:
                # The same request plan as tensorcas: one PUT up to its multipart threshold, else
                # parts of its part size, as many at once.
                for i, v in enumerate(views):
                    big = v.nbytes > MULTIPART_THRESHOLD
                    obstore.put(
                        raw,
                        f"raw-{run}/t{i}",
                        v,
                        use_multipart=big,
                        chunk_size=PART_SIZE,
                        max_concurrency=8,
                    )

            def tc_read(backend: Backend = read_backend) -> None:
                reader = ContentStoreReader(backend)  # opening the store is timed: the logs are read
                for i in range(count):
                    reader.read_tensor(f"t{i}")

            def raw_read(run: str = run, raw: Any = raw_reader) -> None:
                for i in range(count):
                    obstore.get(raw, f"raw-{run}/t{i}").bytes()

            def boto3_write(run: str = run) -> None:
                for i, v in enumerate(views):
                    client.put_object(Bucket=args.bucket, Key=f"boto3-{run}/t{i}", Body=v.tobytes())

            def boto3_read(run: str = run) -> None:
                for i in range(count):
                    client.get_object(Bucket=args.bucket, Key=f"boto3-{run}/t{i}")["Body"].read()

            # The order rotates from one repetition to the next.
            for phase in (
                [("tc write", tc_write), ("raw write", raw_write), ("boto3 write", boto3_write)],
                [("tc read", tc_read), ("raw read", raw_read), ("boto3 read", boto3_read)],
            ):
                for name, fn in phase[rep % 3 :] + phase[: rep % 3]:
                    times[name].append(_median_time(fn))

        # Writing the tensors into a new store, then again unchanged: what goes over the wire.
        url = f"s3://{args.bucket}/bench-rewrite-{uuid.uuid4().hex[:8]}"
        with (
            _Counting() as write_counted,
            ContentStoreWriter(open_backend(url, storage_options=options)) as writer,
        ):
            for i, t in enumerate(tensors):
                writer.write_tensor(f"t{i}", t)
        backend = open_backend(url, storage_options=options)
        with _Counting() as counted:
            start = time.perf_counter()
            with ContentStoreWriter(backend) as writer:
                for i, t in enumerate(tensors):
                    writer.write_tensor(f"t{i}", t)
            rewrite_seconds = time.perf_counter() - start
        # Reading them back: the requests a reader makes, opening the store included.
        with _Counting() as read_counted:
            reader = ContentStoreReader(open_backend(url, storage_options=options))
            for i in range(count):
                reader.read_tensor(f"t{i}")

        def mbps(name: str) -> float:
            return total / statistics.median(times[name]) / 1e6

        print(
            f"server: {'moto on loopback (CPU-bound, Python)' if server else endpoint}; {count} x {mib} MiB float32"
        )
        print(
            f"{'row':<10}{'tensorcas MB/s':>16}{'raw obstore MB/s':>18}{'ratio':>8}{'boto3 MB/s':>12}"
        )
        for row in ("write", "read"):
            tc, rw, bt = mbps(f"tc {row}"), mbps(f"raw {row}"), mbps(f"boto3 {row}")
            print(f"{row:<10}{tc:>16.0f}{rw:>18.0f}{tc / rw:>8.2f}{bt:>12.0f}")
        calls = ", ".join(f"{n} {c}" for n, c in sorted(write_counted.calls.items()))
        print(f"new       {count} new tensors into a new store; calls: {calls}")
        calls = ", ".join(f"{n} {c}" for n, c in sorted(counted.calls.items()))
        sent = (
            ", ".join(f"{kind} {n}" for kind, n in sorted(counted.bytes_put.items())) or "nothing"
        )
        print(
            f"rewrite   {count} unchanged tensors in {rewrite_seconds:.2f} s; bytes put: {sent}; calls: {calls}"
        )
        calls = ", ".join(f"{n} {c}" for n, c in sorted(read_counted.calls.items()))
        print(f"read      {count} tensors, the store opened first; calls: {calls}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
