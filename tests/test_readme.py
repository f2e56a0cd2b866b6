"""The README's example and the demo run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the README has a Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    assert "['model/x', 'model/x_t']" in capsys.readouterr().out


def test_demo_runs_and_reports_a_healthy_store(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), os.fspath(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "verify: healthy" in result.stdout
    assert "replayed matmul inside torch.compile matches: True" in result.stdout
    assert "unchanged layer shares one storage across snapshots: True" in result.stdout


def test_readme_command_line_session_prints_what_it_shows(tmp_path):
    """Each `$ tensorcas ...` of the README's console session, run on the demo's store, prints
    exactly the lines shown (paths aside), and `echo $?` shows its exit code."""
    text = (ROOT / "README.md").read_text()
    session = re.search(r"```console\n(.*?)```", text, re.S).group(1)
    # The demo with no argument, as scripts/demo.sh runs it: the session uses the store it writes.
    subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")], cwd=tmp_path, check=True,
                   capture_output=True, timeout=300)
    steps: list[tuple[str, list[str]]] = []
    for line in session.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    last_code = None
    for command, expected in steps:
        if command == "echo $?":
            assert expected == [str(last_code)], command
            continue
        args = command.split()
        assert args[0] == "tensorcas"
        result = subprocess.run([sys.executable, "-m", "tensorcas", *args[1:]], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        last_code = result.returncode
        shown = [line.replace("/home/me/", f"{tmp_path}/") for line in expected]
        assert result.stdout.splitlines() == shown, (command, result.stdout, result.stderr)
