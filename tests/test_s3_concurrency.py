"""Several writer processes on one bucket prefix at once, with dedupe across them; and writers
racing gc at grace 0 on S3 (the two-phase gc's race tests, on an object store)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

import tensorcas
import test_gc_races
from s3fixtures import BUCKET
from tensorcas import ContentStoreReader, ContentStoreWriter

WRITER = textwrap.dedent(
    """
    import sys

    import torch

    from tensorcas import ContentStoreWriter


    def write(url, i):
        with ContentStoreWriter(url) as writer:
            for j in range(6):
                writer.write_tensor(f"p{i}/shared{j}", torch.full((16 if j % 2 else 20_000,), float(j)))
            writer.write_tensor(f"p{i}/own", torch.full((20_000,), 100.0 + i))


    if __name__ == "__main__":
        print("ready", flush=True)
        sys.stdin.readline()  # all start together
        write(sys.argv[1], int(sys.argv[2]))
    """
)


def test_writer_processes_share_one_prefix_and_dedupe(s3_env, s3_server):
    """Two writer processes and this one, at once, on a new prefix: they create the store
    together and store each shared storage once."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, s3_env, str(i)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(1, 3)
    ]
    here: dict[str, object] = {"__name__": "writer"}
    exec(WRITER, here)
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    here["write"](s3_env, 0)  # type: ignore[operator]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    reader = ContentStoreReader(s3_env, verify=True)
    assert len(reader.list_tensors()) == 3 * 7
    for i in range(3):
        for j in range(6):
            expected = torch.full((16 if j % 2 else 20_000,), float(j))
            assert torch.equal(reader.read_tensor(f"p{i}/shared{j}"), expected)
        assert torch.equal(reader.read_tensor(f"p{i}/own"), torch.full((20_000,), 100.0 + i))
    prefix = s3_env.split("/", 3)[3] + "/blobs/"
    blobs = s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("KeyCount", 0)
    assert blobs == 3 + 3  # each large shared storage once, and each process's own
    assert tensorcas.verify(s3_env).ok


@pytest.fixture
def loc(s3_env: str) -> str:
    """The gc race tests' store, on S3."""
    return s3_env


test_a_new_blob_published_just_before_gc_is_stored_again_when_collected = (
    test_gc_races.test_a_new_blob_published_just_before_gc_is_stored_again_when_collected
)


def test_writers_beside_a_gc_loop_at_grace_zero_lose_nothing(s3_env):
    """gc moves aside on S3 by copy then delete (not atomic) and writers cannot touch: threads
    write overlapping content while gc runs in a loop at grace 0, and nothing written is lost."""
    tensors = {f"t{i}": torch.full((20_000 if i % 2 else 16,), float(i % 3)) for i in range(10)}
    with ContentStoreWriter(s3_env) as writer:
        writer.write_tensor("seed", torch.zeros(2))
    stop = threading.Event()
    errors: list[BaseException] = []
    collected = []

    def collect() -> None:
        while not stop.is_set():
            try:
                collected.append(len(tensorcas.gc(s3_env, grace_seconds=0).removed_blobs))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    collector = threading.Thread(target=collect)
    collector.start()
    try:
        for round_ in range(3):
            with ContentStoreWriter(s3_env) as writer:
                for name, tensor in tensors.items():
                    writer.write_tensor(f"r{round_}/{name}", tensor)
                # Bytes of this round only: once removed, gc has them to collect while the next
                # round writes (the shared tensors' blobs are used again at once).
                writer.write_tensor(f"r{round_}/own", torch.full((20_000,), 100.0 + round_))
            if round_ < 2:
                tensorcas.rm(s3_env, [f"r{round_}/"])
        deadline = time.monotonic() + 60
        while not sum(collected) and not errors and time.monotonic() < deadline:
            time.sleep(0.05)  # the loop's next pass collects what the last removal freed
    finally:
        stop.set()
        collector.join()
    assert errors == []
    assert sum(collected) > 0, "gc never collected anything: the race was not exercised"
    reader = ContentStoreReader(s3_env, verify=True)
    for name, tensor in tensors.items():
        assert torch.equal(reader.read_tensor(f"r2/{name}"), tensor), name
    assert tensorcas.verify(s3_env).ok
