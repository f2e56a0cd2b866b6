"""A valid but absurd record (shape [2**40], stride [0] over a 4-byte blob) is refused the same
way by every command that would walk or copy its elements, and harms none of the others."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
import torch

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas import format as fmt

HUGE = 1 << 40


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    root = tmp_path_factory.mktemp("expanded")
    loc, other = str(root / "store"), str(root / "other")
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.ones(1))
    blob = ContentStoreReader(loc).read_tensor_metadata("x").blob
    (log,) = glob.glob(os.path.join(loc, "logs", "*.log"))
    record = fmt.TensorRecord("huge", "float32", (HUGE,), (0,), 0, False, blob, 4)
    with open(log, "ab") as f:
        f.write(fmt.encode_put(record, 2**62))
    with ContentStoreWriter(other) as writer:
        writer.write_tensor("huge", torch.zeros(1).expand(HUGE))
    return loc, other, str(root)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tensorcas", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "command",
    [
        ["show", "{loc}", "huge"],
        ["diff", "{loc}", "{other}"],
        ["export", "{loc}", "{root}/out.safetensors"],
        ["export", "{loc}", "{root}/out2.safetensors", "huge"],
    ],
    ids=["show", "diff", "export", "export-prefix"],
)
def test_walking_or_copying_commands_refuse_it_cleanly(stores, command):
    loc, other, root = stores
    proc = run(*(arg.format(loc=loc, other=other, root=root) for arg in command))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "'huge'" in lines[0] and "too large to walk" in lines[0]
    assert not os.path.exists(os.path.join(root, "out.safetensors"))


@pytest.mark.parametrize(
    "command",
    [
        ["ls", "{loc}"],
        ["ls", "{loc}", "--json"],
        ["du", "{loc}"],
        ["verify", "{loc}"],
        ["gc", "{loc}", "--dry-run", "--grace", "0"],
        ["rm", "{loc}", "--dry-run", "huge"],
        ["show", "{loc}", "x"],
        ["diff", "{loc}:x", "{other}:x"],
    ],
    ids=lambda c: "-".join(a for a in c if not a.startswith("{")),
)
def test_other_commands_are_unharmed(stores, command):
    loc, other, root = stores
    proc = run(*(arg.format(loc=loc, other=other, root=root) for arg in command))
    assert proc.returncode in (0, 1), (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr


def test_library_export_refuses_it_with_a_store_error(stores):
    loc, _, root = stores
    with pytest.raises(tensorcas.StoreError, match="too large to walk"):
        tensorcas.export_safetensors(loc, os.path.join(root, "lib.safetensors"))
