"""What recording a model run costs: the slowdown of ``tensorcas.record`` against the same
training steps unrecorded, measured side by side in one run.

A small transformer (embedding, pre-norm attention and MLP blocks, a head) trains on random
tokens with SGD, so every step's activations and weights are new bytes (nothing is deduplicated
away).  Rounds alternate the arms (unrecorded, recorded with each setting), each round running
``--steps`` steps; a recorded arm's time includes leaving the ``record`` block, which waits for
every background write, so the ratio is the true cost of having the tensors on disk.

    python benchmarks/record_bench.py                 # the default model (a step of >= 50 ms here)
    python benchmarks/record_bench.py --steps 5 --rounds 2 --dir /path/on/the/disk/to/test
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

import tensorcas


class Block(torch.nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.fc1 = torch.nn.Linear(dim, 4 * dim)
        self.fc2 = torch.nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        att = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class Transformer(torch.nn.Module):
    def __init__(self, vocab: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.blocks = torch.nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def _size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(dirpath, f))
        for dirpath, _, files in os.walk(path)
        for f in files
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="training steps per arm and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument(
        "--dir", default=None, help="where the stores go (default: a temporary directory)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = Transformer(args.vocab, args.dim, args.depth, heads=8)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    root = tempfile.mkdtemp(prefix="record-bench-", dir=args.dir)

    def train_step() -> None:
        tokens = torch.randint(0, args.vocab, (args.batch, args.seq))
        logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def plain(_: str) -> None:
        for _step in range(args.steps):
            train_step()

    def recorded(**options: object) -> Callable[[str], None]:
        def arm(loc: str) -> None:
            with tensorcas.record(loc, "run", model, **options) as rec:  # type: ignore[arg-type]
                for _step in range(args.steps):
                    train_step()
                    rec.step()

        return arm

    arms: dict[str, Callable[[str], None]] = {
        "unrecorded eager": plain,
        "module inputs+outputs": recorded(),
        "module outputs only": recorded(inputs=False),
        "outputs + params + grads": recorded(inputs=False, parameters=True, gradients=True),
        "module in+out, no aliases": recorded(aliases=False),
        "module in+out, synchronous": recorded(background=False),
    }
    train_step()  # warm up kernels and the allocator
    times: dict[str, list[float]] = {name: [] for name in arms}
    stored: dict[str, int] = {}
    order = list(arms.items())
    for round_ in range(args.rounds):
        # each round starts with another arm, so no arm always follows the same neighbour
        shift = round_ % len(order)
        for i, (name, arm) in enumerate(order[shift:] + order[:shift]):
            loc = os.path.join(root, f"arm{i}-round{round_}")
            start = time.perf_counter()
            arm(loc)
            times[name].append((time.perf_counter() - start) / args.steps)
            stored[name] = _size(loc)
            shutil.rmtree(loc, ignore_errors=True)
    base = statistics.median(times["unrecorded eager"])
    print(
        f"model: dim {args.dim}, depth {args.depth}, batch {args.batch}x{args.seq} tokens; "
        f"{args.rounds} rounds x {args.steps} steps per arm; torch threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}; stores in {root}"
    )
    # Interference from other processes only adds time: the fastest round of each arm is the
    # least disturbed one, so its ratio is printed beside the median's.
    fastest = min(times["unrecorded eager"])
    print(
        f"{'arm':<28} {'median ms/step':>15} {'ratio':>7} {'fastest ms/step':>16} {'ratio':>7} "
        f"{'stored MiB/step':>16}"
    )
    for name, values in times.items():
        median, best = statistics.median(values), min(values)
        per_step = stored.get(name, 0) / args.steps / 2**20
        print(
            f"{name:<28} {1000 * median:>15.1f} {median / base:>6.2f}x {1000 * best:>16.1f} "
            f"{best / fastest:>6.2f}x {per_step:>16.1f}"
        )
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
