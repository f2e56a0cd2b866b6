"""Starting fast: the commands that need records and bytes only (``--help``, ``ls``, ``du``, ``gc``,
``verify``) never import torch, while ``import tensorcas`` still makes
``torch.ops.tensorcas.load_tensor`` usable by code that uses torch, whichever is imported first."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from tensorcas import ContentStoreWriter
from tensorcas import format as fmt


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    loc = str(tmp_path_factory.mktemp("start") / "store")
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("w", torch.randn(300, 300))  # a loose blob
        writer.write_tensor("b", torch.randn(3))  # a packed one
        writer.write_tensor("gone", torch.randn(3))
        writer.delete_tensor("gone")
    return loc


def test_record_level_commands_do_not_import_torch(store):
    proc = python(
        f"""
        import json, sys
        from tensorcas.cli import cli
        codes = {{}}
        for args in (["--help"], ["ls", {store!r}], ["ls", {store!r}, "--json"], ["du", {store!r}],
                     ["gc", {store!r}, "--dry-run", "--grace", "0"], ["verify", {store!r}]):
            try:
                codes[args[0]] = cli.main(args=args, prog_name="tensorcas", standalone_mode=False)
            except SystemExit as exc:
                codes[args[0]] = exc.code
        print(json.dumps({{"torch": "torch" in sys.modules, "codes": codes}}))
        """
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["torch"] is False, result
    assert all(code in (None, 0) for code in result["codes"].values()), result


def test_python_m_tensorcas_help_imports_no_torch():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tensorcas", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "Examples" in proc.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]
    assert "torch" not in imported


@pytest.mark.parametrize("order", ["tensorcas-first", "torch-first", "torch-inside-tensorcas"])
def test_import_tensorcas_makes_the_operator_usable(store, order):
    """The spec: after ``import tensorcas``, code using torch can call the operator."""
    imports = {
        "tensorcas-first": "import tensorcas\nimport torch",
        "torch-first": "import torch\nimport tensorcas",
        # torch first imported by tensorcas itself (the reader's module imports it)
        "torch-inside-tensorcas": "import tensorcas\nreader = tensorcas.ContentStoreReader(STORE)\nimport torch",
    }[order]
    proc = python(
        f"STORE = {store!r}\n"
        + imports
        + f"""
with tensorcas.load_tensor_reader({store!r}):
    t = torch.ops.tensorcas.load_tensor("b", (3,), (1,), dtype=torch.float64, device="cpu")
assert t.dtype == torch.float64 and t.shape == (3,)
fake = torch.ops.tensorcas.load_tensor("w", (300, 300), (300, 1), dtype=torch.float32, device="cpu")
assert fake.shape == (300, 300)
print("ok")
"""
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_the_static_dtype_table_agrees_with_torch():
    """Records are read without torch from a static table; it must say what torch says."""
    assert set(fmt.DTYPES) == set(fmt._DTYPE_INFO)  # torch 2.13 has every storable dtype
    for name, dtype in fmt.DTYPES.items():
        size, kind = fmt._DTYPE_INFO[name]
        assert size == dtype.itemsize, name
        assert fmt.is_floating_or_complex(name) == (dtype.is_floating_point or dtype.is_complex)
        assert (kind == "bool") == (dtype == torch.bool)
        assert fmt.torch_dtype(name) is dtype and fmt.dtype_name(dtype) == name
