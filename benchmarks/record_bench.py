"""What recording a model run costs: the slowdown of ``tensorcas.record`` against the same
training steps unrecorded, measured side by side in one run.

A small transformer (embedding, pre-norm attention and MLP blocks, a head) trains on random
tokens with SGD, so every step's activations and weights are new bytes (nothing is deduplicated
away).  Each arm is its own copy of the model (the same weights and data), unrecorded or recorded
with one setting; the arms take one training step each in turn, in a rotating order, so every arm
is measured over the same stretch of time and a change in the machine's load hits them alike.  A
recorded step's time includes waiting for all its background writes (``flush``), so no write
overlaps the next step: the ratio is the whole cost of having the tensors on disk.

    python benchmarks/record_bench.py                 # the default model (a step of >= 50 ms here)
    python benchmarks/record_bench.py --steps 20 --threads 1 --dir /path/on/the/disk/to/test
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

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
    parser.add_argument("--steps", type=int, default=12, help="measured training steps per arm")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps per arm first")
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

    root = tempfile.mkdtemp(prefix="record-bench-", dir=args.dir)
    settings: dict[str, dict[str, object] | None] = {
        "unrecorded eager": None,
        "module inputs+outputs": {},
        "module outputs only": {"inputs": False},
        "outputs + params + grads": {"inputs": False, "parameters": True, "gradients": True},
        "module in+out, no aliases": {"aliases": False},
        "module in+out, synchronous": {"background": False},
    }
    arms = []
    for i, (name, options) in enumerate(settings.items()):
        torch.manual_seed(0)
        model = Transformer(args.vocab, args.dim, args.depth, heads=8)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        loc = os.path.join(root, f"arm{i}")
        rec = None if options is None else tensorcas.record(loc, "run", model, **options).start()  # type: ignore[arg-type]
        arms.append((name, model, opt, rec, loc))

    def train_step(model: Transformer, opt: torch.optim.Optimizer, tokens: torch.Tensor) -> None:
        logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times: dict[str, list[float]] = {name: [] for name, *_ in arms}
    for step in range(args.warmup + args.steps):
        tokens = torch.randint(0, args.vocab, (args.batch, args.seq))
        shift = step % len(arms)
        for name, model, opt, rec, _ in arms[shift:] + arms[:shift]:
            start = time.perf_counter()
            train_step(model, opt, tokens)
            if rec is not None:
                rec.step()
                rec.log.writer.flush()  # this step's tensors are all stored before the clock stops
            if step >= args.warmup:
                times[name].append(time.perf_counter() - start)
    stored = {}
    for name, _, _, rec, loc in arms:
        if rec is not None:
            rec.close()
            stored[name] = _size(loc)
    base = statistics.median(times["unrecorded eager"])
    print(
        f"model: dim {args.dim}, depth {args.depth}, batch {args.batch}x{args.seq} tokens; "
        f"{args.steps} steps per arm after {args.warmup} warm-up, arms interleaved step by step; "
        f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}; stores in {root}"
    )
    print(f"{'arm':<28} {'median ms/step':>15} {'vs unrecorded':>14} {'stored MiB/step':>16}")
    for name, values in times.items():
        median = statistics.median(values)
        per_step = stored.get(name, 0) / (args.warmup + args.steps) / 2**20
        print(f"{name:<28} {1000 * median:>15.1f} {median / base:>13.2f}x {per_step:>16.1f}")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
