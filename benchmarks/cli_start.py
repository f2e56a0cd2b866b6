"""Start-up time of the command line against the libraries it is built on, in one run.

    python benchmarks/cli_start.py            # 9 rounds
    python benchmarks/cli_start.py --rounds 3

Rows: ``tensorcas --help`` and ``tensorcas ls STORE`` (a store of 1,000 small tensors), each
against ``python -c "import click, rich"`` (the floor: the interpreter and the command-line
libraries), and ``python -c "import torch"`` for scale.  Every command is a fresh process; the
contenders run round-robin (the order rotates each round) and the medians are compared.  The goal:
both commands within 2x of the floor.

tensorcas's modules are byte-compiled first, as an installed package's are (click and rich, in
site-packages, are), and ``PYTHONDONTWRITEBYTECODE`` is cleared for the timed processes: otherwise
each start would compile tensorcas from source and be timed doing so.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def make_store(root: str, n: int = 1000) -> str:
    code = (
        "import sys, torch\n"
        "from tensorcas import ContentStoreWriter\n"
        "with ContentStoreWriter(sys.argv[1]) as w:\n"
        f"    for i in range({n}):\n"
        "        w.write_tensor(f'layer{i // 10}/t{i % 10}', torch.full((16,), float(i)))\n"
    )
    loc = os.path.join(root, "store")
    subprocess.run([sys.executable, "-c", code, loc], check=True, env=_env())
    return loc


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=_env())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    compileall.compile_dir(os.path.join(SRC, "tensorcas"), quiet=1)
    with tempfile.TemporaryDirectory() as root:
        store = make_store(root)
        contenders = {
            'python -c "import click, rich"': [sys.executable, "-c", "import click, rich"],
            "tensorcas --help": [sys.executable, "-m", "tensorcas", "--help"],
            "tensorcas ls STORE (1,000 tensors)": [sys.executable, "-m", "tensorcas", "ls", store],
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(timed(contenders[name]))
    floor = statistics.median(times[names[0]])
    print(f"{'command':<38} {'median s':>9} {'x floor':>8}")
    for name in names:
        median = statistics.median(times[name])
        print(f"{name:<38} {median:9.3f} {median / floor:7.2f}x")
    print("goal: tensorcas --help and ls within 2x of the floor (the first row)")


if __name__ == "__main__":
    main()
