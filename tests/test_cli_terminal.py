"""What the command line prints, on a terminal (a pseudo-terminal of 60, 80 and 120 columns) and
through a pipe: nothing cut, nothing wrapped by surprise, and nothing from a store that a terminal
would act on instead of showing.

Each command is run for real (``python -m tensorcas``); the store is built once for the module.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import torch

import tensorcas
from tensorcas import ContentStoreWriter
from tensorcas._cli_text import escape

WIDTHS = (60, 80, 120)

LONG_NAME = "model/encoder/layers.11/self_attention/output_projection/weight_with_a_long_descriptive_suffix"
#: Valid names (no C0 control, no backslash) holding characters a terminal acts on.
HOSTILE_NAMES = [
    "evil\u2028float32  [1]  4 B  forged/row",  # line separator: splitlines() splits here
    "nel\x85float32  [1]  4 B  forged/too",  # NEL, a C1 control (and a line break to Python)
    "csi\x9b31mred",  # the 8-bit CSI: starts an escape sequence on many terminals
    "rlo\u202etxt.exe",  # right-to-left override
    "para\u2029sep",
    "zero\u200bwidth",
]
#: Characters that must never reach the output raw.
DANGEROUS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
STYLE = re.compile(r"\x1b\[[0-9;]*m")  # the bold title of show, which is ours


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    loc = str(tmp_path_factory.mktemp("terminal") / "store")
    torch.manual_seed(0)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("small/bias", torch.randn(10))
        writer.write_tensor(LONG_NAME, torch.randn(64, 64))
        writer.write_tensor("big/activations", torch.randn(1_000_000))  # histogram counts of 6 digits
        for i, name in enumerate(HOSTILE_NAMES):
            writer.write_tensor(name, torch.full((3,), float(i)))
    return loc


def run_piped(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tensorcas", *args], capture_output=True, text=True, timeout=300
    )


def run_tty(*args: str, columns: int) -> tuple[int, str, str]:
    """Run with stdout on a pseudo-terminal of ``columns`` columns; stderr is a pipe."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorcas", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    return proc.returncode, STYLE.sub("", text), err


def check_layout(text: str, columns: int, whole: list[str]) -> list[str]:
    """Every line fits in ``columns``, except a line holding nothing but one name or digest longer
    than the terminal (left whole for the terminal to wrap, so it can be copied); every string of
    ``whole`` appears unbroken on one line.  Returns the lines."""
    assert not DANGEROUS.search(text), repr(text)
    lines = text.splitlines()
    for line in lines:
        if len(line) > columns:
            assert line.strip() in whole, (columns, line)
    for item in whole:
        assert any(item in line for line in lines), (columns, item, text)
    return lines


@pytest.mark.parametrize("columns", WIDTHS)
def test_ls_on_a_terminal_keeps_every_column_and_whole_names(store, columns):
    records = tensorcas.ls(store)
    rc, out, err = run_tty("ls", store, columns=columns)
    assert rc == 0, err
    names = [escape(r.name) for r in records]
    lines = check_layout(out, columns, names)
    assert lines[0].split() == ["dtype", "shape", "size", "name"]
    # Each row's dtype and size are printed (never dropped for lack of room), and the row's
    # name is on that line or folded onto the next one.
    for r in records:
        name = escape(r.name)
        at = next(i for i, line in enumerate(lines) if line.endswith(name) or line.strip() == name)
        row = lines[at] if lines[at].endswith(name) and lines[at].strip() != name else lines[at - 1]
        assert row.split()[0] == r.dtype and "B" in row, (row, name)
    assert "\u2026" not in out and "..." not in out  # no ellipsis: nothing was cut


@pytest.mark.parametrize("columns", WIDTHS)
def test_du_top_on_a_terminal_keeps_every_column(store, columns):
    rc, out, err = run_tty("du", store, "--top", "4", columns=columns)
    assert rc == 0, err
    check_layout(out, columns, [LONG_NAME])
    assert "float32" in out and "[64, 64]" in out and "16.0 KiB" in out


@pytest.mark.parametrize("columns", WIDTHS)
def test_show_on_a_terminal_keeps_labels_digest_and_histogram_counts(store, columns):
    record = tensorcas.ls(store, "big/activations")[0]
    rc, out, err = run_tty("show", store, "big/activations", "-n", "3", columns=columns)
    assert rc == 0, err
    lines = check_layout(out, columns, [record.blob])
    for label in ("requires_grad", "NaN", "infinite", "zeros", "blob size", "stride"):
        assert any(line.startswith(label) for line in lines), (label, out)
    histogram = lines[lines.index("histogram (finite values):") + 1 :][:10]
    summary = tensorcas.show(store, "big/activations")
    assert summary.histogram is not None
    # Every bin's full count ends its own line: no count wraps or is cut.
    assert [int(line.split()[-1]) for line in histogram] == summary.histogram.counts
    assert max(summary.histogram.counts) >= 100_000


def test_piped_output_is_complete_one_line_per_row_without_padding(store):
    records = tensorcas.ls(store)
    proc = run_piped("ls", store)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")[:-1]
    assert len(lines) == 1 + len(records)
    for line, r in zip(lines[1:], records, strict=True):
        assert line.endswith("  " + escape(r.name)) and line.split()[0] == r.dtype
    assert all(line == line.rstrip() for line in lines)
    assert not DANGEROUS.search(proc.stdout)
    record = tensorcas.ls(store, LONG_NAME)[0]
    shown = run_piped("show", store, LONG_NAME).stdout.splitlines()
    assert any(line.split() == ["blob", record.blob] for line in shown), shown


def test_names_from_a_store_are_escaped_in_every_command(store, tmp_path):
    """A name holding U+2028, NEL, the 8-bit CSI, bidi overrides or other non-printable
    characters prints as Python escapes, piped or on a terminal, so it can forge no row."""
    expected = [escape(n) for n in HOSTILE_NAMES]
    assert expected[0] == "evil\\u2028float32  [1]  4 B  forged/row"
    assert expected[2] == "csi\\x9b31mred" and expected[3] == "rlo\\u202etxt.exe"
    other = str(tmp_path / "other")
    with ContentStoreWriter(other) as writer:
        for name in HOSTILE_NAMES:
            writer.write_tensor(name, torch.zeros(3))
    commands = [
        ("ls", store),
        ("du", store, "--top", "20"),
        ("diff", store, other),
        ("rm", store, "--dry-run", *HOSTILE_NAMES),
        ("show", store, HOSTILE_NAMES[0]),
    ]
    for args in commands:
        proc = run_piped(*args)
        assert proc.returncode in (0, 1), (args, proc.stderr)
        assert not DANGEROUS.search(proc.stdout + proc.stderr), (args, proc.stdout)
        shown = [n for n in expected if n in proc.stdout]
        assert shown, (args, proc.stdout)
    listed = run_piped("ls", store).stdout.splitlines()
    assert len(listed) == 1 + len(tensorcas.ls(store))  # no forged row
    # Under a terminal too, and in an error message that quotes a name.
    rc, out, _ = run_tty("ls", store, columns=80)
    assert rc == 0 and not DANGEROUS.search(out) and all(n in out for n in expected)
    missing = run_piped("show", store, "no\u2028such\x9bname\u202e")
    assert missing.returncode == 2 and not DANGEROUS.search(missing.stderr)
    assert len(missing.stderr.strip().splitlines()) == 1
    # JSON stays JSON: every non-ASCII character is a \u escape.
    listed_json = run_piped("ls", store, "--json").stdout
    assert listed_json.isascii() and "\\u2028" in listed_json


def test_str_splitlines_is_not_used_to_print():
    """``str.splitlines`` splits at U+2028, NEL and other characters a name may hold."""
    package = Path(tensorcas.__file__).parent
    sources = [*package.joinpath("cli").glob("*.py"), package / "record_cli.py", package / "_cli_text.py"]
    assert len(sources) >= 5
    for source in sources:
        assert ".splitlines(" not in source.read_text(), source


def test_escape_is_reversible_for_names():
    for name in [*HOSTILE_NAMES, "plain/name", "caf\u00e9/\u00fcber", "emoji/\U0001f600"]:
        escaped = escape(name)
        assert escaped.isprintable()
        assert escaped.encode("ascii", "backslashreplace").decode("unicode_escape") == name
