"""``tensorcas show`` on a large tensor against the plain way, in one run: time and memory.

    python benchmarks/show_stats.py                 # a 1 GiB float32 tensor, 3 rounds
    python benchmarks/show_stats.py --mib 256 --rounds 3

Contenders, each in a fresh process on the same stored tensor (read from the page cache):

* ``show``: ``tensorcas.show(store, name)``: statistics (min, max, mean, std, NaN/Inf/zero
  counts) and a 10-bin histogram, streamed from the blob in bounded memory (two passes: the
  histogram's bins need the range);
* ``show --bins 0``: the statistics alone (one pass);
* ``read + aminmax/mean/std``: ``ContentStoreReader(store).read_tensor(name)`` (an eager read),
  then ``torch.aminmax``, ``mean`` and ``std`` on it.

Each process reports the seconds of the work itself (imports excluded) and how much its resident
memory grew.  The goal: ``show`` within 2x of the second's time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

_PROBE = """
import json, resource, sys, time
import torch, tensorcas
store, name, which = sys.argv[1:4]
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
peak = [0]
def sample(done=0, total=None):
    peak[0] = max(peak[0], rss())
base = rss()
start = time.perf_counter()
if which == "show":
    tensorcas.show(store, name, progress=sample)
elif which == "stats":
    tensorcas.show(store, name, bins=0, progress=sample)
else:
    t = tensorcas.ContentStoreReader(store).read_tensor(name)
    sample()
    torch.aminmax(t); t.mean(); t.std()
seconds = time.perf_counter() - start
sample()
print(json.dumps({"seconds": seconds, "growth": peak[0] - base}))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=1024, help="tensor size in MiB (float32)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        store = os.path.join(root, "store")
        make = textwrap.dedent(
            f"""
            import torch
            from tensorcas import ContentStoreWriter
            torch.manual_seed(0)
            with ContentStoreWriter({store!r}) as w:
                w.write_tensor("x", torch.randn({args.mib} << 18))
            """
        )
        subprocess.run([sys.executable, "-c", make], check=True, env=_env())
        contenders = {
            "show": "show",
            "show --bins 0": "stats",
            "read + aminmax/mean/std": "plain",
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
        names = list(contenders)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                out = subprocess.run(
                    [sys.executable, "-c", _PROBE, store, "x", contenders[name]],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=_env(),
                )
                results[name].append(json.loads(out.stdout))
    plain = statistics.median(r["seconds"] for r in results[names[-1]])
    print(f"{args.mib} MiB float32 tensor, {args.rounds} rounds (medians)")
    print(f"{'contender':<26} {'seconds':>8} {'x plain':>8} {'RSS growth':>11}")
    for name in names:
        seconds = statistics.median(r["seconds"] for r in results[name])
        growth = statistics.median(r["growth"] for r in results[name]) / (1 << 20)
        print(f"{name:<26} {seconds:8.3f} {seconds / plain:7.2f}x {growth:8.0f} MiB")
    print("goal: show within 2x of 'read + aminmax/mean/std'")


if __name__ == "__main__":
    main()
