"""The ``tensorcas`` group and what every command shares: output, progress, errors, exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from .. import __version__
from .._cli_text import escape, prose, table, terminal_width
from ..errors import StoreError

if TYPE_CHECKING:
    from .. import maintenance as m
else:

    class _Library:
        """``tensorcas.maintenance``, imported when a command first uses it: ``--help`` and
        ``--version`` import none of the library."""

        def __getattr__(self, name: str) -> Any:
            from .. import maintenance

            return getattr(maintenance, name)

    m = _Library()


def format_nbytes(n: int) -> str:
    from ..maintenance._common import format_nbytes

    return format_nbytes(n)


def record_to_json(record: Any) -> dict[str, Any]:
    from ..maintenance._common import record_to_json

    return record_to_json(record)


EXIT_OK = 0
EXIT_FOUND = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

_EPILOG = """\b
Examples:
  tensorcas ls dumps/run1 model/
  tensorcas show dumps/run1 model/layer.0/weight --values 8
  tensorcas du dumps/run1
  tensorcas diff dumps/run1 dumps/run2 --rtol 1e-4
  tensorcas diff dumps/run1:step1/ dumps/run1:step2/
  tensorcas diff dumps/run1:model/ model.safetensors
  tensorcas rm dumps/run1 scratch/ old/weight
  tensorcas gc dumps/run1 --dry-run
  tensorcas verify dumps/run1 --json
  tensorcas export dumps/run1 model.safetensors model/ --strip-prefix
  tensorcas import dumps/run1 model.safetensors --prefix imported
  tensorcas repro minifier_launcher.py run
  tensorcas bisect dumps:run-a dumps:run-b --plot errors.png

\b
Exit codes: 0 ok; 1 differences (diff, bisect) or damage (verify) found;
2 usage error, or store error (one line on stderr); 130 interrupted.
"""


class _Out:
    """Text output: laid out for the terminal's width on a terminal, one complete line per row
    when piped.  Every string is escaped (``_cli_text.escape``) before it is written."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.width: int | None = terminal_width() if self.tty else None

    def emit(self, lines: Sequence[str]) -> None:
        if lines:
            click.echo("\n".join(lines))

    def say(self, text: str) -> None:
        """One line of prose, wrapped at spaces on a terminal."""
        self.emit(prose(text, width=self.width))

    def table(self, rows: Sequence[Sequence[str]], right: Sequence[bool], indent: str = "") -> None:
        self.emit(table(rows, right=right, width=self.width, indent=indent))


def _console() -> _Out:
    return _Out()


def _echo_json(obj: Any) -> None:
    # ensure_ascii: every non-ASCII character is a \u escape, so no control character of any
    # kind reaches a terminal from a name.
    click.echo(json.dumps(obj, indent=2, allow_nan=False, default=str, ensure_ascii=True))


@contextmanager
def _progress(
    description: str, *, nbytes: bool = False
) -> Iterator[Callable[[int, int | None], None] | None]:
    """A progress bar on stderr, only when stderr is a terminal; yields the library's callback.
    Standard output stays free of it, whatever it is connected to."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    amount = DownloadColumn() if nbytes else MofNCompleteColumn()
    with Progress(
        TextColumn(description),
        BarColumn(),
        amount,
        TimeElapsedColumn(),
        transient=True,
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


class _Group(click.Group):
    """Turns every ``StoreError`` into one line on stderr and exit status 2 (130 on Ctrl-C)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StoreError as exc:
            # Escaped: a message may quote a name or path holding control characters or newlines.
            click.echo(f"tensorcas: error: {escape(str(exc))}", err=True)
            ctx.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            # Not 1, which means "differences or damage found".  Everything written is whole.
            click.echo("tensorcas: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tensorcas")
def cli() -> None:
    """Inspect and maintain tensorcas stores: content-addressed stores of PyTorch tensors.

    STORE is a store directory, or object storage: s3://BUCKET/PREFIX (gs://, az://), configured
    from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID...).  Read-only commands (ls, show,
    du, diff, verify) never write to it and accept --json.  Text output escapes control, format
    and separator characters in names as \\xNN / \\uNNNN (see docs/cli.md).
    """


_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document instead of text."
)




def _count(n: int, noun: str) -> str:
    """``1 blob``, ``2 blobs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"
