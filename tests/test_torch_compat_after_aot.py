"""PyTorch's after_aot repro flow, end to end on CPU with inductor, with tensorcas as its store.

One small function is compiled once with ``repro_after="aot"`` (the module fixture); the tests then
run the generated ``minifier_launcher.py`` the ways a user would: its inputs back bit for bit,
``run`` and ``analyze`` through ``tensorcas repro``, and plain ``python`` thanks to the line the
switch puts at the top of the script.
"""

from __future__ import annotations

import glob
import os
import re
import runpy
import subprocess
import sys

import pytest
import torch
import torch._dynamo
import torch._inductor.config
from click.testing import CliRunner
from torch._dynamo.repro.after_aot import run_repro

import tensorcas
from storetools import bits
from tensorcas import torch_compat
from tensorcas.cli import cli


def f(a, b, c, d, e):
    # On CPU, inductor runs analyze's intermediate hooks only for extern kernels: a convolution.
    conv = torch.nn.functional.conv2d(a.view(1, 1, 8, 8), b[:3, :3].reshape(1, 1, 3, 3))
    return conv.relu() + b.sum(), c + 1, (d * 3).sum(), e.float().mean()


def make_inputs() -> list[torch.Tensor]:
    torch.manual_seed(1)
    x = torch.randn(8, 8)
    return [x, x.t(), x[1:3], torch.randn(300, 50)[5:], torch.arange(6)]


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    """(launcher path, save_dir, the inputs it was compiled with)."""
    root = tmp_path_factory.mktemp("after_aot")
    inputs = make_inputs()
    torch._dynamo.reset()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with (
            torch_compat.install(),
            torch._dynamo.config.patch(
                repro_after="aot", repro_level=3, debug_dir_root=str(root / "debug")
            ),
        ):
            torch.compile(f, backend="inductor")(*inputs)
    finally:
        os.chdir(cwd)
        torch._dynamo.reset()
    (launcher,) = glob.glob(str(root / "debug" / "**" / "minifier_launcher.py"), recursive=True)
    with open(launcher) as fh:
        text = fh.read()
    assert text.startswith(torch_compat.SWITCH_LINE)
    save_dir = re.search(r"save_dir='([^']+)'", text).group(1)
    return launcher, save_dir, inputs


@pytest.fixture(autouse=True)
def no_switch_left():
    # run_repro turns on inductor's intermediate hooks for the whole process: put it back too.
    with torch._inductor.config.patch(generate_intermediate_hooks=False):
        yield
    torch_compat.uninstall()


def test_inputs_come_back_bit_exact_with_their_aliasing(repro, monkeypatch):
    launcher, save_dir, inputs = repro
    assert tensorcas.verify(save_dir).ok
    namespace = runpy.run_path(launcher, run_name="repro")  # its first line installs the switch
    assert torch_compat.installed()
    monkeypatch.setattr(sys, "argv", ["repro"])
    _, args = run_repro(
        namespace["mod"],
        namespace["load_args"],
        command="get_args",
        save_dir=save_dir,
        tracing_mode="real",
    )
    assert len(args) == len(inputs)
    for got, want in zip(args, inputs, strict=True):
        assert got.shape == want.shape and got.stride() == want.stride()
        assert got.storage_offset() == want.storage_offset() and got.dtype == want.dtype
        assert bits(got) == bits(want)
    ptrs = [a.untyped_storage().data_ptr() for a in args]
    assert ptrs[0] == ptrs[1] == ptrs[2] and len(set(ptrs)) == 3  # x, x.t(), x[1:3] share


def test_run_and_analyze_through_tensorcas_repro(repro):
    launcher, save_dir, _ = repro
    runner = CliRunner()
    result = runner.invoke(cli, ["repro", launcher, "run"])
    assert result.exit_code == 0, result.output
    assert not torch_compat.installed()  # the command leaves no switch behind

    result = runner.invoke(cli, ["repro", launcher, "analyze"])
    assert result.exit_code == 0, result.output
    assert "NONDETERMINISTIC" not in result.output and "DIVERGED" not in result.output
    names = tensorcas.ContentStoreReader(save_dir).list_tensors()
    assert any(n.startswith("inductor/") for n in names)
    assert any(n.startswith("float64/") for n in names)
    assert tensorcas.verify(save_dir).ok


def test_plain_python_runs_the_script_with_real_inputs(repro):
    launcher, _, _ = repro
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run(
        [sys.executable, launcher, "get_args"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generating random data" not in done.stderr
