"""The first error messages a newcomer meets say what is wrong and what to do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.utils._content_store as torch_content_store

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tensorcas", *args], capture_output=True, text=True, timeout=300
    )


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_a_file_where_a_store_is_expected(tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"not a store")
    line = error_line(run("verify", str(model)))
    assert "is a file, and a store is a directory" in line and "tensorcas import" in line
    assert "does not exist" not in line and "ContentStoreWriter" not in line
    with pytest.raises(tensorcas.StoreNotFoundError, match="is a file") as caught:
        ContentStoreReader(str(tmp_path / "model.safetensors"))
    assert isinstance(caught.value, FileNotFoundError)


def test_a_pytorch_content_store_is_named_and_its_conversion_suggested(tmp_path):
    source = str(tmp_path / "pt")
    torch_content_store.ContentStoreWriter(source).write_tensor("x", torch.ones(2))
    line = error_line(run("ls", source))
    assert "torch.utils._content_store" in line and f"tensorcas import NEW_STORE {source}" in line


def test_ls_of_a_prefix_that_matches_nothing_says_so_and_suggests_names(tmp_path):
    loc = str(tmp_path / "s")
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("step0/params/weight", torch.ones(2))
        writer.write_tensor("step1/params/weight", torch.ones(2))
    line = error_line(run("ls", loc, "step0/param"))
    assert "no tensor named 'step0/param'" in line and "'step0/params/'" in line
    assert "did you mean" not in error_line(run("ls", loc, "zzzzzz"))
    assert run("ls", loc, "step0").returncode == 0


def test_export_over_an_existing_file_names_the_option(tmp_path):
    loc = str(tmp_path / "s")
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.ones(2))
    out = tmp_path / "x.safetensors"
    out.write_bytes(b"keep me")
    line = error_line(run("export", loc, str(out)))
    assert "--overwrite" in line and "overwrite=True" not in line
    assert out.read_bytes() == b"keep me"


def test_memory_store_opened_to_read_is_new_and_empty():
    assert ContentStoreReader("memory://").list_tensors() == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a build without CUDA")
def test_reading_onto_a_device_torch_lacks_is_a_store_error(tmp_path):
    loc = str(tmp_path / "s")
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.ones(2))
    with pytest.raises(tensorcas.StoreError, match="cannot be read onto device cuda"):
        ContentStoreReader(loc).read_tensor("x", device="cuda")


def test_counts_are_singular_when_there_is_one(tmp_path):
    loc = str(tmp_path / "s")
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.randn(1 << 15))
    outputs = run("du", loc).stdout + run("verify", loc).stdout + run("gc", loc, "--dry-run").stdout
    assert "1 blob " in outputs or "1 blob," in outputs
    assert not re.search(r"\b1 (blob|tensor|pack|problem)s\b", outputs), outputs
    assert "(s)" not in outputs


def test_every_exit_code_is_documented():
    doc = (ROOT / "docs" / "cli.md").read_text()
    table = doc[doc.index("## Exit codes") : doc.index("## Output")]
    for code in ("0", "1", "2", "130"):
        assert f"| {code} |" in table, code
    assert "130" in run("--help").stdout


def test_interrupted_command_exits_130(tmp_path):
    loc = str(tmp_path / "s")
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.ones(2))
    code = (
        "import sys, tensorcas.maintenance as m\n"
        "def stop(*a, **k):\n    raise KeyboardInterrupt\n"
        "m.ls = stop\n"
        "from tensorcas.cli import main\n"
        f"main(['ls', {loc!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130 and proc.stderr.strip() == "tensorcas: interrupted"
    assert os.path.isdir(loc)
