"""Multi-process scenarios for tests/test_dcp_dist.py, run in spawned processes (gloo, loopback).

Each scenario is a function ``(rank, world, *args) -> result`` run on every rank after the
default process group is set up; :func:`run_ranks` starts the ranks, waits for them and returns
each rank's result or error.
"""

from __future__ import annotations

import os
import socket
import traceback
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# -- running ranks -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(
    rank: int,
    world: int,
    port: int,
    timeout_s: float,
    fn: Any,
    args: tuple,
    queue: Any,
    env: dict[str, str],
) -> None:
    os.environ.update(env, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
        )
        result = fn(rank, world, *args)
        queue.put((rank, "ok", result))
    except BaseException:
        queue.put((rank, "error", traceback.format_exc()))
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:
                pass


def run_ranks(
    world: int,
    fn: Any,
    *args: Any,
    timeout_s: float = 30.0,
    wait_s: float = 120.0,
    env: dict[str, str] | None = None,
) -> dict[int, Any]:
    """Run ``fn`` on ``world`` spawned ranks; ``{rank: ("ok", result) | ("error", traceback)}``.
    A rank that died without reporting is missing from the result.  ``env`` is added to each
    rank's environment (the fork server's is the one it started with)."""
    # A fork server that imported torch and DCP once starts each rank in a fraction of the time
    # a fresh interpreter needs (ranks share nothing else with the test process).
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(
        [
            "torch",
            "torch.distributed.checkpoint",
            "torch.distributed.tensor",
            "tensorcas.dcp.storage",
            "dcp_workers",
        ]
    )
    queue = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_entry, args=(r, world, port, timeout_s, fn, args, queue, env or {}))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    out: dict[int, Any] = {}
    import queue as queue_module

    alive = list(procs)
    deadline = wait_s
    import time

    start = time.monotonic()
    while len(out) < world and time.monotonic() - start < deadline:
        try:
            rank, status, value = queue.get(timeout=0.5)
            out[rank] = (status, value)
        except queue_module.Empty:
            alive = [p for p in alive if p.is_alive()]
            if not alive and queue.empty():
                break
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join()
    return out


# -- a tiny model sharded with DTensor -------------------------------------------------------------


def make_model(mesh: Any, seed: int, kind: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Two linear layers with odd sizes (uneven and empty shards on 4 ranks), every parameter
    sharded along dim 0 across the mesh, by hand with DTensor (``kind="dtensor"``) or by FSDP2's
    ``fully_shard`` (``kind="fsdp"``); Adam over the DTensor parameters."""
    from torch.distributed.tensor import (
        DTensor,
        Replicate,
        Shard,
        distribute_module,
        distribute_tensor,
    )

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, 30), torch.nn.ReLU(), torch.nn.Linear(30, 3))
    if kind == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in (model[0], model[2]):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model, torch.optim.Adam(model.parameters(), lr=0.05)

    def partition(name: str, module: torch.nn.Module, mesh: Any) -> None:
        for pname, param in list(module.named_parameters(recurse=False)):
            sharded = torch.nn.Parameter(distribute_tensor(param.detach(), mesh, [Shard(0)]))
            module.register_parameter(pname, sharded)

    def replicate_inputs(module: torch.nn.Module, inputs: tuple, mesh: Any) -> tuple:
        return tuple(
            x if isinstance(x, DTensor) else DTensor.from_local(x, mesh, [Replicate()])
            for x in inputs
        )

    model = distribute_module(model, mesh, partition, input_fn=replicate_inputs)
    optim = torch.optim.Adam(model.parameters(), lr=0.05)
    return model, optim


def train_step(model: torch.nn.Module, optim: torch.optim.Optimizer, step: int) -> None:
    from torch.distributed.tensor import DTensor

    torch.manual_seed(1000 + step)  # the same batch on every rank
    x = torch.randn(5, 10)
    out = model(x)
    loss = (out.full_tensor() if isinstance(out, DTensor) else out).pow(2).sum()
    optim.zero_grad()
    loss.backward()
    for p in model.parameters():  # gradients come back in another placement than the parameter's
        p.grad = p.grad.redistribute(p.device_mesh, p.placements)
    optim.step()


def full_state(sd: Any) -> Any:
    """The state dict with every DTensor gathered whole (a collective: all ranks call it)."""
    from torch.distributed.tensor import DTensor

    if isinstance(sd, dict):
        return {k: full_state(v) for k, v in sd.items()}
    if isinstance(sd, list):
        return [full_state(v) for v in sd]
    if isinstance(sd, DTensor):
        return sd.full_tensor()
    if isinstance(sd, torch.Tensor):
        return sd.clone()
    return sd


def state(
    model: torch.nn.Module, optim: torch.optim.Optimizer, step: int, fill: float = 1.0
) -> dict[str, Any]:
    """What a trainer saves: model and optimizer state by fully qualified name, a step count,
    some bytes, and a frozen embedding whose every shard holds the same bytes."""
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.tensor import Shard, distribute_tensor

    model_sd, optim_sd = get_state_dict(model, optim)
    mesh = next(iter(model.parameters())).device_mesh
    frozen = distribute_tensor(torch.full((8, 16), fill), mesh, [Shard(0)])
    return {
        "model": model_sd,
        "optim": optim_sd,
        "frozen": frozen,
        "step": step,
        "note": f"after step {step}".encode(),
    }


# -- scenarios -------------------------------------------------------------------------------------


def save_series(
    rank: int, world: int, loc: str, ref_dir: str, load_ranks: int, kind: str
) -> dict[str, Any]:
    """Train a sharded model on ``world`` ranks and save a checkpoint after each of three steps
    (the last with ``async_save``); rank 0 writes each checkpoint's whole tensors to ``ref_dir``
    with ``torch.save`` for the test to compare against.  Then load every checkpoint on a mesh of
    ``load_ranks`` ranks (a different number than saved) into a freshly initialised model and
    compare.  Last, start a save during which rank 1 dies (see ``doomed``)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

    import tensorcas.dcp

    mesh = init_device_mesh("cpu", (world,))
    model, optim = make_model(mesh, seed=0, kind=kind)
    for step in range(1, 4):
        train_step(model, optim, step)
        sd = state(model, optim, step)
        writer = tensorcas.dcp.Writer(loc, f"step-{step}")
        expected = full_state(sd)
        if rank == 0:
            torch.save(expected, os.path.join(ref_dir, f"step-{step}.pt"))
        if step < 3:
            dcp.save(sd, storage_writer=writer)
        else:
            # Training goes on during the save, so the save's collectives need a group of their own.
            future = dcp.async_save(
                sd, storage_writer=writer, process_group=dist.new_group(backend="gloo")
            )
            train_step(model, optim, 99)
            future.result()

    # Load on fewer ranks: every rank takes part in making the sub-mesh, the first ones load.
    small = DeviceMesh("cpu", torch.arange(load_ranks))
    mismatches = []
    if rank < load_ranks:
        for step in range(1, 4):
            model2, optim2 = make_model(small, seed=7, kind=kind)
            sd2 = state(model2, optim2, 0, fill=0.0)
            sd2["note"] = b""
            dcp.load(
                sd2,
                storage_reader=tensorcas.dcp.Reader(loc, f"step-{step}"),
                process_group=small.get_group(),
            )
            set_state_dict(
                model2, optim2, model_state_dict=sd2["model"], optim_state_dict=sd2["optim"]
            )
            got = full_state(state(model2, optim2, sd2["step"]))
            got["note"], got["frozen"] = sd2["note"], sd2["frozen"].full_tensor()
            want = (
                torch.load(os.path.join(ref_dir, f"step-{step}.pt"), weights_only=True)
                if rank == 0
                else None
            )
            if rank == 0:
                mismatches += compare(want, got, f"step-{step}")
    dist.barrier()
    return {"mismatches": mismatches, "doomed": doomed(rank, model, optim, loc)}


def doomed(rank: int, model: torch.nn.Module, optim: torch.optim.Optimizer, loc: str) -> str:
    """Save ``doomed``, during which rank 1 dies (as a crash would) after writing one chunk.  The
    other ranks must fail, and nothing may be published."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner

    import tensorcas.dcp

    class DieAfterOne(DefaultSavePlanner):
        resolved = 0

        def resolve_data(self, write_item: Any) -> Any:
            data = super().resolve_data(write_item)
            if rank == 1 and isinstance(data, torch.Tensor):
                self.resolved += 1
                if self.resolved == 2:  # one chunk is written; die before the next is
                    os._exit(17)
            return data

    sd = state(model, optim, 4)
    try:
        dcp.save(sd, storage_writer=tensorcas.dcp.Writer(loc, "doomed"), planner=DieAfterOne())
    except BaseException as exc:  # DCP reports the lost rank
        return f"failed: {type(exc).__name__}"
    return "saved"


def compare(want: Any, got: Any, where: str) -> list[str]:
    """Where two nested state dicts differ (tensors bit for bit, dtype and shape included)."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(want) != set(got):
            return [
                f"{where}: keys {sorted(map(str, want))} != {sorted(map(str, got)) if isinstance(got, dict) else got!r}"
            ]
        return [m for k in want for m in compare(want[k], got[k], f"{where}.{k}")]
    if isinstance(want, (list, tuple)):
        if type(got) is not type(want) or len(got) != len(want):
            return [f"{where}: {want!r} != {got!r}"]
        return [m for i, (a, b) in enumerate(zip(want, got)) for m in compare(a, b, f"{where}.{i}")]
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.dtype != want.dtype or got.shape != want.shape:
            return [f"{where}: {want.dtype} {list(want.shape)} != {got!r}"[:300]]
        if not torch.equal(_bits(want), _bits(got)):
            return [f"{where}: values differ"]
        return []
    return [] if want == got else [f"{where}: {want!r} != {got!r}"]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)
