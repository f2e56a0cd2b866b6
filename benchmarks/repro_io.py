"""One repro's inputs written and read back by PyTorch's repro tooling, with PyTorch's store and
with tensorcas in its place, side by side in one run.

    .venv/bin/python benchmarks/repro_io.py               # about 100 MB of inputs, 3 repetitions
    .venv/bin/python benchmarks/repro_io.py --mb 20 --repeat 1

The inputs are those of a small transformer block's compiled graph (weights, activations, views
sharing a storage, an int64 index tensor, small biases).  Both stores are driven through PyTorch's
own ``InputWriter`` and ``InputReader`` (``torch._dynamo.debug_utils``), exactly as a repro script
saves and loads them; tensorcas is put in place with ``tensorcas.torch_compat.install()``.
PyTorch's writer uses ``stable_hash=True`` (SHA-1): its default fast hash compiles a kernel with
inductor on first use, which would time the compiler.

Each repetition writes into new directories, alternating which store goes first; ``os.sync()``
(untimed) follows every write.  Reads come from the page cache.  Medians are reported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch._dynamo.debug_utils import InputReader, InputWriter

from tensorcas import torch_compat


def make_inputs(total_mb: float) -> list[torch.Tensor]:
    torch.manual_seed(0)
    d = max(64, int((total_mb * (1 << 20) / 4 / 14) ** 0.5))  # ~14 d*d float32 matrices
    weights = [torch.randn(d, d) for _ in range(4)]  # q, k, v, o projections
    mlp_in, mlp_out = torch.randn(4 * d, d), torch.randn(d, 4 * d)
    acts = torch.randn(2 * d, d)
    qkv = torch.randn(d, 3 * d)
    return [
        *weights,
        mlp_in,
        mlp_out,
        acts,
        acts[d:],  # a view with an offset, sharing acts' storage
        qkv[:, :d],
        qkv[:, d : 2 * d],  # two views of one storage
        torch.randn(d),
        torch.randn(4 * d),  # biases
        torch.randint(0, 50_000, (d,), dtype=torch.int64),
        torch.randn(d).expand(8, d),  # stride 0
    ]


def write(save_dir: str, inputs: list[torch.Tensor], stable_hash: bool) -> str:
    writer = InputWriter(save_dir, stable_hash=stable_hash)
    for i, t in enumerate(inputs):
        writer.tensor(f"arg{i}", t)
    return "\n".join(writer.lines())


def read(save_dir: str, source: str) -> list[Any]:
    namespace: dict[str, Any] = {}
    exec("import torch\n" + source, namespace)
    reader = InputReader(save_dir)
    namespace["load_args"](reader)
    return reader.args


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=100.0, help="size of the inputs (MB)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary dir)")
    opts = parser.parse_args()

    inputs = make_inputs(opts.mb)
    nbytes = sum(
        {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in inputs}.values()
    )
    root = tempfile.mkdtemp(prefix="repro-io-", dir=opts.dir)
    times: dict[str, list[float]] = {
        k: [] for k in ("torch write", "tensorcas write", "torch read", "tensorcas read")
    }
    try:
        for rep in range(opts.repeat):
            order = ["torch", "tensorcas"] if rep % 2 == 0 else ["tensorcas", "torch"]
            for who in order:
                save_dir = os.path.join(root, f"{who}-{rep}")
                switch = torch_compat.install() if who == "tensorcas" else None
                try:
                    seconds, source = timed(write, save_dir, inputs, True)
                    os.sync()
                    times[f"{who} write"].append(seconds)
                    seconds, args = timed(read, save_dir, source)
                    times[f"{who} read"].append(seconds)
                finally:
                    if switch is not None:
                        switch.uninstall()
                for got, want in zip(args, inputs, strict=True):
                    assert torch.equal(got, want) and got.stride() == want.stride(), who
                shutil.rmtree(save_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    mb = nbytes / 1e6
    print(
        f"torch {torch.__version__}; {len(inputs)} inputs, {mb:.1f} MB of storages; median of {opts.repeat}"
    )
    for op in ("write", "read"):
        t, c = med[f"torch {op}"], med[f"tensorcas {op}"]
        print(
            f"{op:5}  torch.utils._content_store {t * 1e3:8.1f} ms ({mb / t:7.0f} MB/s)   "
            f"tensorcas {c * 1e3:8.1f} ms ({mb / c:7.0f} MB/s)   tensorcas {t / c:.2f}x faster"
        )


if __name__ == "__main__":
    main()
