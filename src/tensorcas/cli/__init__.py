"""The ``tensorcas`` command: a thin layer over ``tensorcas.maintenance``.

Each command parses its arguments, calls one library function and prints its result: as text
for people, or with ``--json`` (read-only commands) as one JSON document for scripts.  Exit codes:
0 success; 1 the command worked and found differences (``diff``, ``bisect``) or damage
(``verify``); 2 a usage error, or a store error, printed as one line without a traceback; 130
interrupted.

``_base`` holds the group, output and error handling; ``inspect`` the read-only commands;
``maintain`` the commands that change or check stores; ``tools`` the integrations' commands.
Nothing here imports torch or the library until a command runs (``--help`` stays fast).
"""

from __future__ import annotations

import click

from ..record_cli import bisect_command, make_repro_command
from . import inspect, maintain, tools
from ._base import EXIT_ERROR, EXIT_FOUND, EXIT_INTERRUPTED, EXIT_OK, cli

cli.add_command(bisect_command)
cli.add_command(make_repro_command)

#: One line each for ``tensorcas --help``: whole sentences that fit 80 columns, never cut.
_SUMMARIES = {
    "bisect": "Find where two recorded runs first diverge.",
    "checkpoints": "List, remove or export saved checkpoints.",
    "cp": "Copy a store, sending only blobs the target lacks.",
    "diff": "Compare the tensors of two stores or prefixes.",
    "du": "Logical against stored bytes; what gc would free.",
    "export": "Write tensors to a safetensors file.",
    "gc": "Delete blobs no tensor or root uses.",
    "import": "Import a safetensors file or a PyTorch store.",
    "ls": "List tensors (or storage roots).",
    "make-repro": "Write a script replaying one recorded graph call.",
    "repro": "Run a PyTorch repro script on a tensorcas store.",
    "rm": "Remove tensors or storage roots (gc frees bytes).",
    "show": "One tensor: record, statistics, histogram.",
    "verify": "Re-hash every blob and re-check every record.",
}
_CHECKPOINT_SUMMARIES = {
    "export": "Write one checkpoint to a safetensors file.",
    "ls": "List checkpoints with their sizes.",
    "rm": "Remove checkpoints (gc frees their bytes).",
}
for _name, _summary in _SUMMARIES.items():
    cli.commands[_name].short_help = _summary
_group = cli.commands["checkpoints"]
assert isinstance(_group, click.Group)
for _name, _summary in _CHECKPOINT_SUMMARIES.items():
    _group.commands[_name].short_help = _summary

__all__ = [
    "EXIT_ERROR",
    "EXIT_FOUND",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "cli",
    "inspect",
    "main",
    "maintain",
    "tools",
]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tensorcas`` console script and ``python -m tensorcas``."""
    cli.main(args=argv, prog_name="tensorcas")
