"""The demo deletes only a store it wrote itself, and the path from the two set-up commands to
"now try the command line on what the demo wrote" is one consistent path."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tensorcas import ContentStoreWriter

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "examples" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_folder_of_someone_else_is_refused_and_kept(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("x")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), str(precious)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "nothing was deleted" in proc.stderr and "notes.txt" in proc.stderr
    assert (precious / "notes.txt").read_text() == "x"


def test_only_new_empty_or_the_demos_own_stores_are_replaceable(demo, tmp_path):
    demo.check_replaceable(str(tmp_path / "new"))
    (tmp_path / "empty").mkdir()
    demo.check_replaceable(str(tmp_path / "empty"))
    own = str(tmp_path / "own")
    with ContentStoreWriter(own) as writer:
        writer.write_tensor("step0/params/w", torch.randn(100, 100))  # a loose blob
        writer.write_tensor("step1/params/b", torch.randn(3))  # a packed one
    demo.check_replaceable(own)

    other = str(tmp_path / "other")
    with ContentStoreWriter(other) as writer:
        writer.write_tensor("model/w", torch.randn(3))
    with pytest.raises(demo.NotTheDemosError, match="did not write"):
        demo.check_replaceable(other)
    for planted in ("notes.txt", ".bashrc", "logs/readme", "mine/"):
        target = tmp_path / f"planted-{len(planted)}"
        with ContentStoreWriter(str(target)) as writer:
            writer.write_tensor("step0/x", torch.ones(2))
        path = target / planted
        if planted.endswith("/"):
            path.mkdir()
        else:
            path.write_text("mine")
        with pytest.raises(demo.NotTheDemosError):
            demo.check_replaceable(str(target))
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(demo.NotTheDemosError, match="not a directory"):
        demo.check_replaceable(str(afile))


def test_one_store_name_and_the_environment_from_setup_to_the_cli_session(demo):
    """scripts/demo.sh writes the store the README's session reads, and both say how to use the
    environment the set-up made (it is not on PATH by itself)."""
    script = (ROOT / "scripts" / "demo.sh").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "STORE=${1:-" + demo.DEFAULT_STORE + "}" in script
    assert "source .venv/bin/activate" in script and "tensorcas ls $STORE" in script
    setup = readme[readme.index("## Set-up") : readme.index("## Example")]
    assert "source .venv/bin/activate" in setup and f"tensorcas ls {demo.DEFAULT_STORE}" in setup
    session = re.search(r"```console\n(.*?)```", readme, re.S)
    assert session is not None
    stores = {
        line.split()[3].split(":")[0]
        for line in session.group(1).splitlines()
        if line.startswith("$ tensorcas ")
    }
    assert stores == {demo.DEFAULT_STORE}
    assert os.access(ROOT / "scripts" / "demo.sh", os.R_OK)


def test_demo_help_prints_usage_and_writes_nothing(tmp_path):
    """An option is never taken for a store directory (``--help`` once made a store of that name)."""
    demo = ROOT / "examples" / "demo.py"
    for args, code in ((["--help"], 0), (["-x"], 2), (["a", "b"], 2)):
        result = subprocess.run(
            [sys.executable, str(demo), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == code and "usage: python examples/demo.py" in result.stdout
    assert list(tmp_path.iterdir()) == []
