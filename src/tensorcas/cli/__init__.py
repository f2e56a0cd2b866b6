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

from ..record_cli import bisect_command, make_repro_command
from . import inspect, maintain, tools
from ._base import EXIT_ERROR, EXIT_FOUND, EXIT_INTERRUPTED, EXIT_OK, cli

cli.add_command(bisect_command)
cli.add_command(make_repro_command)

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
