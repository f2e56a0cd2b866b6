"""``diff`` compares a store with what people already have, read in place and never converted:
a safetensors file, or a directory written by PyTorch's ``torch.utils._content_store``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.utils._content_store as torch_content_store
from safetensors.torch import save_file

import tensorcas
from tensorcas import ContentStoreWriter


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tensorcas", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def model(tmp_path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"layer/weight": torch.randn(64, 32), "layer/bias": torch.randn(32)}


@pytest.fixture
def store(tmp_path, model) -> str:
    loc = str(tmp_path / "store")
    with ContentStoreWriter(loc) as writer:
        for name, t in model.items():
            writer.write_tensor(f"model/{name}", t)
    return loc


def test_diff_against_a_safetensors_file(store, model, tmp_path):
    path = str(tmp_path / "model.safetensors")
    changed = dict(model)
    changed["layer/bias"] = model["layer/bias"] + 1.0
    changed["extra"] = torch.zeros(2)
    save_file(changed, path)
    before = sorted(os.listdir(tmp_path))
    result = tensorcas.diff(f"{store}:model/", path)
    statuses = {e.key: e.status for e in result.entries}
    assert statuses == {"layer/weight": "identical", "layer/bias": "different", "extra": "only-in-b"}
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, nothing imported

    proc = run("diff", f"{store}:model/", path, "--json")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["first_difference"] == "layer/bias"
    save_file(model, path)
    assert run("diff", path, f"{store}:model/").returncode == 0  # either side
    # a prefix inside the file
    assert tensorcas.diff(f"{path}:layer/", f"{store}:model/layer/").ok


def test_diff_against_a_pytorch_content_store(store, model, tmp_path):
    source = str(tmp_path / "pt")
    writer = torch_content_store.ContentStoreWriter(source, stable_hash=True)
    writer.write_tensor("layer/weight", model["layer/weight"])
    writer.write_tensor("layer/bias", model["layer/bias"] * 2)
    result = tensorcas.diff(f"{store}:model/", source)
    assert {e.key: e.status for e in result.entries} == {
        "layer/weight": "identical",
        "layer/bias": "different",
    }
    proc = run("diff", source, f"{store}:model/")
    assert proc.returncode == 1 and "different  layer/bias" in proc.stdout, proc.stderr


def test_a_file_that_is_not_safetensors_is_a_clear_error(store, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    proc = run("diff", store, str(junk))
    assert proc.returncode == 2 and "not a readable safetensors file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
