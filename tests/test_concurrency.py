"""Several processes write, read and collect garbage in one store at the same time.

Writers store overlapping content (the same blobs published by several processes at once, small
ones packed and large ones as files) under names of their own and under names they all share.
Readers list and read with ``verify=True`` while that happens, and a gc with a short grace period
runs beside them.  Afterwards every name a writer wrote is readable bit-exact, each shared name
holds one of the values written to it, and ``verify`` finds nothing wrong.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
import traceback
from typing import Any

import blake3
import pytest
import torch

from storetools import assert_verify_ok, bits, unexpected_files
from tensorcas import (
    ContentStoreReader,
    ContentStoreWriter,
    CorruptObjectError,
    StoreError,
    TensorNotFoundError,
)
from tensorcas.maintenance import gc

WRITERS = 4
READERS = 2
WRITES = 50  # per writer, each to an own name and to a shared one
SEEDS = 12


def content(seed: int, view: bool) -> torch.Tensor:
    """One of a few contents: every third large enough for a blob file of its own."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(80_000 if seed % 3 == 0 else 1 + seed * 3, generator=g)
    return t[1:] if view else t


def fingerprint(t: torch.Tensor) -> str:
    return blake3.blake3(bits(t)).hexdigest()


VALID = {fingerprint(content(s, v)) for s in range(SEEDS) for v in (False, True)}


def _report(results: Any, kind: str, body: Any) -> None:
    results.put((kind, os.getpid(), body))


def writer_proc(loc: str, k: int, start: Any, results: Any) -> None:
    try:
        torch.set_num_threads(1)
        start.wait()
        acks = []
        with ContentStoreWriter(loc) as w:
            for i in range(WRITES):
                seed, view = (i * 5 + k) % SEEDS, i % 4 == 3
                t = content(seed, view)
                w.write_tensor(f"w{k}/{i}", t)
                w.write_tensor(f"shared/{i % 6}", t)
                acks.append((f"w{k}/{i}", seed, view))
        _report(results, "writer", acks)
    except BaseException:
        _report(results, "error", traceback.format_exc())


def reader_proc(loc: str, start: Any, done: Any, results: Any) -> None:
    try:
        torch.set_num_threads(1)
        start.wait()
        reads = stale = 0
        while not done.is_set():
            try:
                reader = ContentStoreReader(loc, verify=True)
            except TensorNotFoundError:
                continue
            except Exception as exc:
                if "no tensorcas store" in str(exc):
                    continue  # not created yet
                raise
            for name in reader.list_tensors():
                try:
                    t = reader.read_tensor(name)
                except CorruptObjectError:
                    # A shared name may be overwritten after this reader listed it, and gc may then
                    # collect the blob its listed record used.  Names never overwritten may not fail.
                    if not name.startswith("shared/"):
                        raise
                    stale += 1
                    continue
                assert fingerprint(t) in VALID, f"{name} read back bytes no writer wrote"
                reads += 1
        _report(results, "reader", (reads, stale))
    except BaseException:
        _report(results, "error", traceback.format_exc())


def gc_proc(loc: str, start: Any, done: Any, results: Any) -> None:
    try:
        start.wait()
        runs = freed = 0
        while not done.is_set():
            if os.path.exists(os.path.join(loc, "tensorcas.json")):
                report = gc(loc, grace_seconds=1.0)
                runs += 1
                freed += len(getattr(report, "deleted", ()) or ())
            time.sleep(0.1)
        _report(results, "gc", (runs, freed))
    except BaseException:
        _report(results, "error", traceback.format_exc())


def test_concurrent_writers_readers_and_gc(tmp_path):
    loc = os.fspath(tmp_path / "store")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "tensorcas", "blake3"])
    start, done, results = ctx.Event(), ctx.Event(), ctx.Queue()
    writers = [
        ctx.Process(target=writer_proc, args=(loc, k, start, results)) for k in range(WRITERS)
    ]
    others = [
        ctx.Process(target=reader_proc, args=(loc, start, done, results)) for _ in range(READERS)
    ]
    others.append(ctx.Process(target=gc_proc, args=(loc, start, done, results)))
    for p in writers + others:
        p.start()
    start.set()
    collected: list[tuple[str, int, Any]] = []
    try:
        for p in writers:
            p.join(timeout=120)
        # Let readers and gc run a little longer over the finished store, then stop them.
        time.sleep(1.5)
        done.set()
        for p in others:
            p.join(timeout=60)
        while True:
            try:
                collected.append(results.get(timeout=1))
            except queue.Empty:
                break
    finally:
        for p in writers + others:
            if p.is_alive():
                p.kill()
    errors = [body for kind, _, body in collected if kind == "error"]
    assert not errors, errors[0]
    assert all(p.exitcode == 0 for p in writers + others)
    kinds = [kind for kind, _, _ in collected]
    assert kinds.count("writer") == WRITERS and kinds.count("reader") == READERS and "gc" in kinds
    reads = sum(body[0] for kind, _, body in collected if kind == "reader")
    assert reads > 0, "the readers never read anything while the writers wrote"

    reader = ContentStoreReader(loc, verify=True)
    acks = [a for kind, _, body in collected if kind == "writer" for a in body]
    assert len(acks) == WRITERS * WRITES
    for name, seed, view in acks:
        assert bits(reader.read_tensor(name)) == bits(content(seed, view)), name
    for i in range(6):
        assert fingerprint(reader.read_tensor(f"shared/{i}")) in VALID
    assert len(reader.list_tensors()) == WRITERS * WRITES + 6
    assert_verify_ok(loc)
    assert unexpected_files(loc) == []
    gc_runs = next(body for kind, _, body in collected if kind == "gc")
    print(
        f"\n{WRITERS} writers, {READERS} readers ({reads} reads), gc ran {gc_runs[0]} times beside them"
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_appends_to_its_parents_log(tmp_path):
    """A writer inherited through fork (a data loader's workers) refuses to write in the child,
    and closing it there (the child's exit) appends nothing: a seal from the child, while the
    parent still packs, would let gc rewrite the parent's pack."""
    loc = str(tmp_path / "store")
    writer = ContentStoreWriter(loc)
    writer.write_tensor("before", torch.arange(4.0))
    logs = os.path.join(loc, "logs")
    (log,) = os.listdir(logs)
    size = os.path.getsize(os.path.join(logs, log))
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            try:
                writer.write_tensor("child", torch.ones(2))
            except StoreError as exc:
                code = 0 if "fork" in str(exc) else 2
            writer.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.path.getsize(os.path.join(logs, log)) == size  # nothing appended by the child
    writer.write_tensor("after", torch.arange(3.0))
    writer.close()
    reader = ContentStoreReader(loc)
    assert reader.list_tensors() == ["before", "after"]
    assert_verify_ok(loc)
