"""The ``tensorcas`` command, run for real in a subprocess (``python -m tensorcas``).

Each run imports torch (about a second and a half), so stores are built in this process and each
test makes as few calls as it can.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.utils._content_store as torch_content_store
from safetensors.torch import load_file

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas import format as fmt


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tensorcas", *args], capture_output=True, text=True, timeout=300
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The exit status is 2 and stderr is one line, with no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def stores(tmp_path: Path) -> tuple[str, str]:
    """Two stores of one model's tensors; in the second, one tensor changed and one is new."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    w = torch.randn(128, 256)  # large enough to be a loose blob, not a packed one
    changed = w.clone()
    changed[3, 7] = 42.0
    with ContentStoreWriter(a) as writer:
        writer.write_tensor("model/w", w)
        writer.write_tensor("model/w_t", w.t())
        writer.write_tensor("model/mask", torch.tensor([True, False]))
        writer.write_tensor("act/x", torch.tensor([1.0, float("nan"), 0.0]))
    with ContentStoreWriter(b) as writer:
        writer.write_tensor("model/w", changed)
        writer.write_tensor("model/w_t", w.t())
        writer.write_tensor("model/mask", torch.tensor([True, False]))
        writer.write_tensor("act/x", torch.tensor([1.0, float("nan"), 0.0]))
        writer.write_tensor("extra", torch.zeros(1))
    return a, b


def test_help_lists_commands_examples_and_exit_codes():
    proc = run("--help")
    assert proc.returncode == 0
    for word in (
        "ls",
        "show",
        "du",
        "diff",
        "rm",
        "gc",
        "verify",
        "export",
        "import",
        "Examples",
        "Exit codes",
    ):
        assert word in proc.stdout
    version = run("--version")
    assert version.returncode == 0 and tensorcas.__version__ in version.stdout


def test_ls_text_and_json(stores):
    a, _ = stores
    text = run("ls", a, "model/")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["dtype", "shape", "size", "name"]
    assert [line.split()[-1] for line in lines[1:]] == ["model/w", "model/w_t", "model/mask"]
    assert all(line == line.rstrip() for line in lines)
    listed = json.loads(run("ls", a, "--json").stdout)
    assert [r["name"] for r in listed] == ["model/w", "model/w_t", "model/mask", "act/x"]
    assert listed[1]["shape"] == [256, 128] and listed[1]["stride"] == [1, 256]
    assert listed[0]["nbytes"] == 128 * 256 * 4 and listed[0]["dtype"] == "float32"


def test_show_json_and_text(stores):
    a, _ = stores
    shown = json.loads(run("show", a, "act/x", "--json", "--values", "3").stdout)
    assert shown["record"]["name"] == "act/x"
    assert (
        shown["stats"]["nan"] == 1 and shown["stats"]["zeros"] == 1 and shown["stats"]["max"] == 1.0
    )
    assert shown["values"] == [1.0, "nan", 0.0]
    text = run("show", a, "model/w", "-n", "2")
    assert text.returncode == 0
    assert "histogram" in text.stdout and "first 2 values" in text.stdout and "std" in text.stdout


def test_du_json(stores):
    a, _ = stores
    usage = json.loads(run("du", a, "--json", "--top", "1").stdout)
    assert usage["names"] == 4
    assert usage["logical_bytes"] > usage["referenced_bytes"]  # w and w_t share a blob
    assert usage["dedupe_ratio"] > 1.9
    assert [t["name"] for t in usage["largest"]] == ["model/w"]


def test_diff_exit_codes_and_json(stores):
    a, b = stores
    same = run("diff", f"{a}:model/w_t", f"{b}:model/w_t")
    assert same.returncode == 0, same.stdout + same.stderr

    differ = run("diff", a, b, "--json")
    assert differ.returncode == 1
    result = json.loads(differ.stdout)
    assert result["ok"] is False and result["first_difference"] == "model/w"
    entries = {e["key"]: e for e in result["entries"]}
    assert entries["model/w"]["status"] == "different" and entries["model/w"]["max_abs_index"] == [
        3,
        7,
    ]
    assert entries["act/x"]["status"] == "identical" and entries["extra"]["status"] == "only-in-b"

    text = run("diff", a, b, "--rtol", "1e-3", "--atol", "0")
    assert text.returncode == 1
    assert text.stdout.splitlines()[0].startswith("different  model/w")
    assert "first difference: model/w" in text.stdout


def test_rm_prefix_and_usage_errors(stores):
    a, _ = stores
    proc = run("rm", a, "model/", "act/x")
    assert proc.returncode == 0, proc.stderr
    assert "removed 4 tensors" in proc.stdout
    assert tensorcas.ls(a) == []
    assert "no tensor named 'nothing'" in one_line_error(run("rm", a, "nothing"))


def test_gc_dry_run_grace_and_bad_duration(tmp_path):
    loc = str(tmp_path / "s")
    big = torch.randn(1 << 16)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("keep", torch.randn(1 << 16))
        writer.write_tensor("drop", big)
    digest = tensorcas.ls(loc, "drop")[0].blob
    path = os.path.join(loc, *fmt.blob_key(digest).split("/"))
    tensorcas.rm(loc, ["drop"])

    dry = run("gc", loc, "--dry-run", "--grace", "0")
    assert dry.returncode == 0 and "would remove 1 blob," in dry.stdout
    assert os.path.exists(path)
    recent = run("gc", loc, "--grace", "2d")  # touched moments ago: kept
    assert recent.returncode == 0 and "removed 0 blobs" in recent.stdout and os.path.exists(path)
    now = run("gc", loc, "--grace", "0s")
    assert now.returncode == 0 and "removed 1 blob," in now.stdout and "256.0 KiB" in now.stdout
    assert not os.path.exists(path)
    bad = run("gc", loc, "--grace", "soon")
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    assert ContentStoreReader(loc).read_tensor("keep").shape == (1 << 16,)


def test_verify_exit_codes_on_healthy_and_damaged_store(stores):
    a, _ = stores
    healthy = run("verify", a, "--json")
    assert healthy.returncode == 0
    assert json.loads(healthy.stdout)["ok"] is True
    digest = tensorcas.ls(a, "model/w")[0].blob
    path = os.path.join(a, *fmt.blob_key(digest).split("/"))
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    damaged = run("verify", a)
    assert damaged.returncode == 1
    assert "DAMAGED" in damaged.stdout and "model/w_t" in damaged.stdout


def test_export_then_reload_with_safetensors(stores, tmp_path):
    a, _ = stores
    out = str(tmp_path / "model.safetensors")
    proc = run("export", a, out, "model/", "--strip-prefix")
    assert proc.returncode == 0, proc.stderr
    assert (
        "exported 3 tensors" in proc.stdout
        and "note:" in proc.stdout
        and "model/w_t" in proc.stdout
    )
    loaded = load_file(out)
    reader = ContentStoreReader(a)
    assert sorted(loaded) == ["mask", "w", "w_t"]
    assert torch.equal(loaded["w_t"], reader.read_tensor("model/w_t"))
    assert "exists" in one_line_error(run("export", a, out))


def test_import_from_a_pytorch_content_store(tmp_path):
    source = str(tmp_path / "pt")
    base = torch.arange(12, dtype=torch.float32)
    pt_writer = torch_content_store.ContentStoreWriter(source, stable_hash=True)
    pt_writer.write_tensor("layer/weight", base.view(3, 4))
    pt_writer.write_tensor("layer/weight_t", base.view(3, 4).t())
    loc = str(tmp_path / "store")
    proc = run("import", loc, source, "--prefix", "pt")
    assert proc.returncode == 0, proc.stderr
    assert "imported 2 tensors" in proc.stdout and "torch-content-store" in proc.stdout
    reader = ContentStoreReader(loc)
    assert torch.equal(reader.read_tensor("pt/layer/weight_t"), base.view(3, 4).t())
    records = {r.name: r for r in tensorcas.ls(loc)}
    assert records["pt/layer/weight"].blob == records["pt/layer/weight_t"].blob
    junk = tmp_path / "junk"
    junk.mkdir()
    assert "not a PyTorch content store" in one_line_error(run("import", loc, str(junk)))


def test_store_errors_are_one_line(tmp_path):
    assert "no tensorcas store" in one_line_error(run("show", str(tmp_path / "missing"), "y"))


def test_help_summaries_are_never_cut_at_80_columns():
    from click.testing import CliRunner

    from tensorcas.cli import cli

    for args in ([], ["checkpoints"]):
        result = CliRunner().invoke(cli, [*args, "--help"], terminal_width=80)
        commands = result.output.split("Commands:")[1].split("Examples:")[0]
        assert result.exit_code == 0 and commands.strip()
        assert "..." not in commands, commands
        assert all(len(line) <= 80 for line in commands.splitlines())


def test_diff_says_when_no_name_lines_up(tmp_path):
    from click.testing import CliRunner

    from tensorcas.cli import cli

    loc = str(tmp_path / "store")
    with tensorcas.ContentStoreWriter(loc) as writer:
        writer.write_tensor("step0/a", torch.ones(2))
    result = CliRunner().invoke(cli, ["diff", f"{loc}:step0/", loc])
    assert result.exit_code == 1 and "did one side miss its prefix?" in result.output
    same = CliRunner().invoke(cli, ["diff", f"{loc}:step0/", f"{loc}:step0/"])
    assert same.exit_code == 0 and "miss its prefix" not in same.output
