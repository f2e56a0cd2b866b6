"""Writers killed with SIGKILL at random moments lose nothing they acknowledged.

Writer processes write tensors without pause and, after each ``write_tensor`` returns, append an
acknowledgement (name, shape, stride and a BLAKE3 checksum of the values) to a file of their own.
The test kills each one at a random moment: while the store is being created, while a blob is
being written or linked, while a log line is being appended.  Afterwards every acknowledged tensor
must read back bit-exact with ``verify=True``, ``verify`` must find no error (a torn log tail is a
warning) and the store may hold nothing but its own files and temporaries of interrupted writes.

Starting a Python process that imports torch costs about two CPU seconds, so most writers are
forked from a server process that imported everything once; a few are full ``sys.executable``
processes, killed at random moments of their life too.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import blake3
import pytest
import torch

from storetools import assert_verify_ok, bits, unexpected_files
from tensorcas import ContentStoreReader, ContentStoreWriter

#: The writer's code, run by ``sys.executable``: ``spawn`` writes until killed; ``serve`` forks a
#: writer for each ``fork`` command read from stdin and reports its exit status on ``wait``.
WRITER_SCRIPT = r"""
import json, os, random, sys, traceback

import torch
import blake3
import tensorcas


def make(kind, cid):
    if kind == "s":
        g = torch.Generator().manual_seed(cid)
        return torch.randn(1 + cid % 50, generator=g)
    g = torch.Generator().manual_seed(1_000_000 + cid)
    base = torch.randn(16384 * (1 + cid % 16), generator=g)
    if kind == "m":
        return base
    return base[cid % 7 :: 3]  # a strided view: same storage as the 'm' tensor


def ack(tensor, name):
    flat = tensor.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
    return json.dumps({
        "name": name, "bits": blake3.blake3(flat).hexdigest(), "shape": list(tensor.shape),
        "stride": list(tensor.stride()), "offset": tensor.storage_offset(),
    }) + "\n"


def write_forever(loc, seed, ack_path, durable):
    torch.set_num_threads(1)
    rng = random.Random(seed)
    fd = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    writer = tensorcas.ContentStoreWriter(loc, durable=durable)
    for i in range(1_000_000):
        kind = rng.choice("sssssmmv")
        cid = rng.randrange(100_000 if kind == "s" else 24)
        name = f"w{seed}/{i}-{kind}{cid}"
        tensor = make(kind, cid)
        writer.write_tensor(name, tensor)
        os.write(fd, ack(tensor, name).encode())  # only now is the write acknowledged


if sys.argv[1] == "spawn":
    write_forever(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1")
else:
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "fork":
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    write_forever(cmd[1], int(cmd[2]), cmd[3], cmd[4] == "1")
                except BaseException:
                    traceback.print_exc()
                    code = 1
                os._exit(code)
            print(pid, flush=True)
        elif cmd[0] == "wait":
            print(os.waitpid(int(cmd[1]), 0)[1], flush=True)
"""

#: Writers forked and killed on one shared store, and fresh stores killed early (while created).
FORKED_KILLS = 100
EARLY_KILLS = 20
SPAWNED_KILLS = 2


def _read_acks(path: str) -> list[dict[str, object]]:
    """Complete acknowledgement lines (a line cut by the kill was never acknowledged)."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def _check(loc: str, acks: list[dict[str, object]]) -> None:
    """Every acknowledged tensor reads back bit-exact; the store is sound and holds only its own
    files and temporaries."""
    reader = ContentStoreReader(loc, verify=True)
    for a in acks:
        t = reader.read_tensor(str(a["name"]))
        assert list(t.shape) == a["shape"] and list(t.stride()) == a["stride"], a
        assert t.storage_offset() == a["offset"], a
        assert blake3.blake3(bits(t)).hexdigest() == a["bits"], a["name"]
    assert_verify_ok(loc)
    assert unexpected_files(loc) == []


def _killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


class ForkServer:
    """A writer server: a ``sys.executable`` process that imported torch once and forks writers."""

    def __init__(self, tmp_path: os.PathLike[str]) -> None:
        self.stderr = open(os.path.join(tmp_path, "server.err"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER_SCRIPT, "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        assert self.ask(None) == "ready"

    def ask(self, command: str | None) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def kill_writer(self, loc: str, seed: int, ack_path: str, durable: bool, delay: float) -> int:
        """Fork a writer, SIGKILL it after ``delay`` seconds, and return its exit status."""
        pid = int(self.ask(f"fork {loc} {seed} {ack_path} {int(durable)}"))
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        return int(self.ask(f"wait {pid}"))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.stderr.close()


@pytest.mark.slow
def test_sigkilled_writers_lose_nothing_acknowledged(tmp_path):
    rng = random.Random(int(os.environ.get("TENSORCAS_CRASH_SEED", "20240607")))
    loc = os.fspath(tmp_path / "store")
    acks_dir = tmp_path / "acks"
    acks_dir.mkdir()
    server = ForkServer(tmp_path)
    kills = 0
    acked: list[dict[str, object]] = []
    try:
        for seed in range(FORKED_KILLS):
            ack_path = os.fspath(acks_dir / f"{seed}.txt")
            # Mostly short lives (kills land in every phase of a write), a few longer ones.
            delay = rng.choice([rng.uniform(0, 0.02), rng.uniform(0, 0.1), rng.uniform(0.1, 0.3)])
            status = server.kill_writer(loc, seed, ack_path, rng.random() < 0.25, delay)
            assert _killed(status), f"writer {seed} ended with status {status}, not by SIGKILL"
            kills += 1
            acked += _read_acks(ack_path)
            if seed == FORKED_KILLS // 2:
                _check(loc, acked)
        early_acked = 0
        for seed in range(EARLY_KILLS):
            # A new store each time, killed within its first milliseconds: while it is created.
            early_loc = os.fspath(tmp_path / f"early{seed}")
            ack_path = os.fspath(acks_dir / f"early{seed}.txt")
            status = server.kill_writer(
                early_loc, 10_000 + seed, ack_path, seed % 2 == 1, rng.uniform(0, 0.03)
            )
            assert _killed(status)
            kills += 1
            acks = _read_acks(ack_path)
            early_acked += len(acks)
            assert unexpected_files(early_loc) == [] if os.path.isdir(early_loc) else True
            if os.path.exists(os.path.join(early_loc, "tensorcas.json")):
                _check(early_loc, acks)
            # Whatever the kill left, a new writer can use the location.
            with ContentStoreWriter(early_loc) as writer:
                writer.write_tensor("after", torch.arange(5))
            _check(early_loc, acks)
    finally:
        server.close()

    for seed in range(SPAWNED_KILLS):
        ack_path = os.fspath(acks_dir / f"spawn{seed}.txt")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER_SCRIPT,
                "spawn",
                loc,
                str(20_000 + seed),
                ack_path,
                str(seed % 2),
            ]
        )
        deadline = time.monotonic() + 60
        while not _read_acks(ack_path) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.2))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        kills += 1
        acked += _read_acks(ack_path)

    assert len(acked) > 200, (
        "writers were killed before they acknowledged much: the test proves little"
    )
    _check(loc, acked)
    # The store goes on working: a new writer adds to it and everything still reads back.
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("after/all", torch.ones(3))
    assert len(ContentStoreReader(loc).list_tensors()) >= len({a["name"] for a in acked}) + 1
    temporaries = sum(1 for _, _, files in os.walk(loc) for f in files if f.startswith(".tmp-"))
    print(
        f"\nSIGKILLs survived: {kills} ({len(acked)} acknowledged tensors on the shared store, "
        f"{early_acked} on {EARLY_KILLS} stores killed while new; {temporaries} temporaries left)"
    )
