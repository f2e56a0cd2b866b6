"""The ``tensorcas`` command: a thin layer over ``tensorcas.maintenance``.

Each command parses its arguments, calls one library function and prints its result: as text
for people, or with ``--json`` (read-only commands) as one JSON document for scripts.  Exit codes:
0 success; 1 the command worked and found differences (``diff``) or damage (``verify``); 2 a
usage error, or a store error, printed as one line without a traceback.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from ._cli_text import escape, prose, table, terminal_width
from .errors import StoreError, TensorNotFoundError
from .record_cli import bisect_command, make_repro_command, plot_diff, plot_option, plot_show

if TYPE_CHECKING:
    from . import maintenance as m
else:

    class _Library:
        """``tensorcas.maintenance``, imported when a command first uses it: ``--help`` and
        ``--version`` import none of the library."""

        def __getattr__(self, name: str) -> Any:
            from . import maintenance

            return getattr(maintenance, name)

    m = _Library()


def format_nbytes(n: int) -> str:
    from .maintenance._common import format_nbytes

    return format_nbytes(n)


def record_to_json(record: Any) -> dict[str, Any]:
    from .maintenance._common import record_to_json

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


# -- ls -----------------------------------------------------------------------------------------


@cli.command("ls")
@click.argument("store")
@click.argument("prefix", default="")
@click.option(
    "--roots", "roots", is_flag=True, help="List storage roots (write_storage) instead of tensors."
)
@_json_option
def ls_command(store: str, prefix: str, roots: bool, as_json: bool) -> None:
    """List tensors under PREFIX (all by default) in writing order: dtype, shape, size, name.

    PREFIX 'model' matches 'model' and 'model/...'; 'model/' matches only names below it.
    With --roots, list the storages kept without a name (written with write_storage, as
    PyTorch's repro tooling does): digest, size and the foreign digests they are known by.
    """
    if roots:
        found = m.list_roots(store)
        if as_json:
            _echo_json(
                [{"blob": r.blob, "nbytes": r.nbytes, "aliases": list(r.aliases)} for r in found]
            )
            return
        listed = [("size", "blob", "aliases")]
        listed += [(format_nbytes(r.nbytes), r.blob, " ".join(r.aliases)) for r in found]
        _console().table(listed, right=(True, False, False))
        return
    records = m.ls(store, prefix)
    if not records and prefix:
        raise TensorNotFoundError(_no_match(store, prefix))
    if as_json:
        _echo_json([record_to_json(r) for r in records])
        return
    if not records:
        click.echo(f"tensorcas: store {escape(store)} holds no tensors", err=True)
        return
    rows = [("dtype", "shape", "size", "name")]
    rows += [(r.dtype, _shape(r.shape), format_nbytes(r.view_nbytes), r.name) for r in records]
    _console().table(rows, right=(False, False, True, False))


def _no_match(store: str, prefix: str) -> str:
    """What to say when PREFIX selects nothing: the closest names and prefixes, if any."""
    import difflib

    names = [r.name for r in m.ls(store)]
    if not names:
        return f"store {store} holds no tensors; nothing matches {prefix!r}"
    candidates = set(names)
    for name in names:
        parts = name.split("/")
        candidates.update("/".join(parts[:i]) + "/" for i in range(1, len(parts)))
    close = difflib.get_close_matches(prefix, sorted(candidates), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"no tensor named {prefix!r} or below it in store {store}{hint} "
        f"(list every name with 'tensorcas ls {store}')"
    )


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


# -- show ---------------------------------------------------------------------------------------


@cli.command("show")
@click.argument("store")
@click.argument("name")
@click.option(
    "--values",
    "-n",
    "values",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Also print the first N elements (row-major).",
)
@click.option(
    "--bins",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Histogram bins (0: none).",
)
@plot_option
@_json_option
def show_command(store: str, name: str, values: int, bins: int, plot: str | None, as_json: bool) -> None:
    """Show one tensor: its record, statistics (min, max, mean, std, NaN/Inf/zero counts) and a
    histogram.  Statistics are over finite elements; complex tensors are described by |z|."""
    with _progress("reading") as progress:
        summary = m.show(store, name, values=values, bins=bins, progress=progress)
    plot_show(store, name, plot, bins)
    if as_json:
        _echo_json(summary.to_json())
        return
    out = _console()
    r = summary.record
    title = escape(r.name)
    click.echo(click.style(title, bold=True) if out.tty else title)
    rows = [
        ("dtype", r.dtype),
        ("shape", _shape(r.shape)),
        ("stride", _shape(r.stride)),
        ("offset", str(r.offset)),
        ("requires_grad", str(r.requires_grad).lower()),
        ("size", f"{format_nbytes(r.view_nbytes)} ({r.numel} elements)"),
        ("blob", r.blob),
        ("blob size", f"{format_nbytes(r.nbytes)} ({r.nbytes} bytes)"),
    ]
    s = summary.stats
    if s is not None:
        rows += [
            ("min", _num(s.min)),
            ("max", _num(s.max)),
            ("mean", _num(s.mean)),
            ("std", _num(s.std)),
            ("nan / inf / zeros", f"{s.nan} / {s.inf} (+{s.posinf} -{s.neginf}) / {s.zeros}"),
        ]
        if s.of != "values":
            rows.append(("statistics of", s.of))
    out.table(rows, right=(False, False))
    if summary.histogram is not None:
        out.say("histogram (finite values):")
        bar = 40
        if out.width is not None:  # the bar gives way, so that no line wraps
            longest = max((len(str(c)) for c in summary.histogram.counts), default=1)
            bar = max(8, min(40, out.width - 2 - 29 - 1 - 1 - longest))
        out.emit(["  " + escape(line) for line in summary.histogram.lines(bar)])
    if summary.values is not None:
        out.say(
            f"first {len(summary.values)} values: " + ", ".join(_num(v) for v in summary.values)
        )
    for note in summary.notes:
        out.say(f"note: {note}")


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# -- du -----------------------------------------------------------------------------------------


@cli.command("du")
@click.argument("store")
@click.option(
    "--top",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many of the largest tensors to list.",
)
@_json_option
def du_command(store: str, top: int, as_json: bool) -> None:
    """Disk usage: logical bytes (what the named tensors cover) against stored bytes (blobs), the
    dedupe ratio, and the largest tensors."""
    usage = m.du(store, top=top)
    if as_json:
        _echo_json(usage.to_json())
        return
    out = _console()
    rows = [
        ("tensors", str(usage.names), ""),
        ("logical", format_nbytes(usage.logical_bytes), f"{usage.logical_bytes} bytes"),
        (
            "stored (referenced)",
            format_nbytes(usage.referenced_bytes),
            _count(usage.referenced_blobs, "blob"),
        ),
        (
            "freed by gc",
            format_nbytes(usage.freeable_bytes),
            _count(usage.freeable_blobs, "unused blob")
            + (" (once older than gc's grace period)" if usage.freeable_blobs else ""),
        ),
    ]
    if usage.packed_unused_blobs:
        rows.append(
            (
                "unused inside packs",
                format_nbytes(usage.packed_unused_bytes),
                _count(usage.packed_unused_blobs, "blob")
                + " (kept by gc: their packs are open or mostly in use)",
            )
        )
    if usage.roots:
        rows.append(
            (
                "storage roots",
                format_nbytes(usage.root_bytes),
                _count(usage.roots, "blob") + " kept without a name (tensorcas ls --roots)",
            )
        )
    rows += [
        ("logs", format_nbytes(usage.log_bytes), ""),
        ("dedupe ratio", f"{usage.dedupe_ratio:.2f}x", ""),
    ]
    if usage.missing_blobs:
        rows.append(("missing blobs", str(usage.missing_blobs), "run 'tensorcas verify'"))
    if usage.unreadable:
        rows.append(
            ("unreadable", str(usage.unreadable), "not regular files; run 'tensorcas verify'")
        )
    out.table(rows, right=(False, True, False))
    if usage.largest:
        out.say("largest tensors:")
        out.table(
            [
                (format_nbytes(r.view_nbytes), r.dtype, _shape(r.shape), r.name)
                for r in usage.largest
            ],
            right=(True, False, False, False),
            indent="  ",
        )


def _count(n: int, noun: str) -> str:
    """``1 blob``, ``2 blobs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


# -- diff ---------------------------------------------------------------------------------------


@cli.command("diff")
@click.argument("a")
@click.argument("b")
@click.option(
    "--rtol",
    default=1e-5,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Relative tolerance.",
)
@click.option(
    "--atol",
    default=1e-8,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Absolute tolerance.",
)
@click.option("--all", "show_all", is_flag=True, help="Also list identical and close tensors.")
@plot_option
@_json_option
def diff_command(
    a: str, b: str, rtol: float, atol: float, show_all: bool, plot: str | None, as_json: bool
) -> None:
    """Compare tensors of the same name in A and B; exit 1 if any differ or are missing.

    A and B are STORE or STORE:PREFIX (split at the last ':' unless the whole argument is an
    existing path).  Either may also be a safetensors file or a directory written by PyTorch's
    torch.utils._content_store, read in place.  Names are matched below the prefixes, so
    'runs/a:step1/' against 'runs/a:step2/' pairs step1/x with step2/x.  A pair is close when
    |a - b| <= atol + rtol * |b| everywhere.  Results follow A's writing order, so the first
    difference listed is the first one written.
    """
    with _progress("comparing") as progress:
        result = m.diff(a, b, rtol=rtol, atol=atol, progress=progress)
    plot_diff(a, b, result, plot)
    if as_json:
        _echo_json(result.to_json())
    else:
        out = _console()
        for e in result.entries:
            if e.ok and not show_all:
                continue
            out.say(_diff_line(e))
        counts = ", ".join(
            f"{result.count(s)} {s}"
            for s in ("identical", "close", "different", "only-in-a", "only-in-b")
        )
        first = result.first_difference
        out.say(f"{len(result.entries)} compared: {counts}")
        if first is not None:
            out.say(f"first difference: {first.key}")
    click.get_current_context().exit(EXIT_OK if result.ok else EXIT_FOUND)


def _diff_line(e: m.TensorDiff) -> str:
    if e.status in ("only-in-a", "only-in-b"):
        return f"{e.status:<10} {e.key}"
    text = f"{e.status:<10} {e.key}"
    if e.reason:
        text += f"  ({e.reason})"
    if e.status in ("different", "close") and e.max_abs_index is not None:
        text += (
            f"  max abs err {e.max_abs_error:.4g} at {e.max_abs_index}, max rel err {e.max_rel_error:.4g}"
            f" at {e.max_rel_index}"
        )
        if e.mismatched:
            text += f", {e.mismatched}/{e.numel} elements outside tolerance, first at {e.first_mismatch_index}"
    return text


# -- rm and gc ----------------------------------------------------------------------------------


@cli.command("rm")
@click.argument("store")
@click.argument("names", nargs=-1)
@click.option(
    "--root",
    "roots",
    multiple=True,
    metavar="DIGEST",
    help="Also stop keeping this storage root (see 'ls --roots'); repeatable.",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def rm_command(store: str, names: tuple[str, ...], roots: tuple[str, ...], dry_run: bool) -> None:
    """Remove tensors by NAME; a NAME ending in '/' removes everything below it.

    Nothing is removed unless every NAME and root matches.  Bytes are freed later by
    'tensorcas gc'.
    """
    if not names and not roots:
        raise click.UsageError("give at least one NAME, or --root DIGEST")
    report = m.rm(store, names, roots=roots, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    out = _console()
    for name in report.removed:
        out.say(f"{verb} {name}")
    for digest in report.removed_roots:
        out.say(f"{verb} root {digest}")
    out.say(
        f"{verb} {_count(len(report.removed), 'tensor')}"
        + (f", {_count(len(report.removed_roots), 'root')}" if roots else "")
    )


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """``0``, ``30s``, ``10m``, ``1h``, ``2d``: a number of seconds."""

    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        match = _DURATION.match(str(value).strip().lower())
        if match is None:
            self.fail(f"{value!r} is not a duration; use e.g. 0, 30s, 10m, 1h or 2d", param, ctx)
        return float(match.group(1)) * _UNITS[match.group(2)]


@cli.command("gc")
@click.argument("store")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@click.option(
    "--grace",
    type=Duration(),
    default="1h",
    show_default=True,
    help="Keep blobs and temporaries touched this recently (0, 30s, 10m, 1h, 2d).  "
    "0 collects now and is safe only when nothing writes to the store.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Collect even if some log lines are unreadable (their blobs may be lost).",
)
def gc_command(store: str, dry_run: bool, grace: float, force: bool) -> None:
    """Delete blobs no tensor uses and temporaries of interrupted writes.

    Safe while other processes write: a blob written or reused within the grace period is
    kept.  Packs of small blobs are collected once their writer has closed them and at least
    half their bytes are unused; the blobs still in use are copied to a new pack first.  Logs
    are not compacted.
    """
    with _progress("collecting") as progress:
        report = m.gc(store, grace_seconds=grace, dry_run=dry_run, force=force, progress=progress)
    verb = "would remove" if dry_run else "removed"
    text = (
        f"{verb} {_count(len(report.removed_blobs), 'blob')}, "
        f"{_count(len(report.removed_packs), 'pack')} "
        f"and {_count(len(report.removed_temporaries), 'temporary file')}, "
        f"{format_nbytes(report.bytes_freed)}; {_count(report.referenced, 'blob')} in use, "
        f"{report.kept_recent} unused but newer than the grace period"
    )
    if report.packed_unreferenced_blobs:
        text += (
            f"; {_count(report.packed_unreferenced_blobs, 'unused small blob')} "
            f"({format_nbytes(report.packed_unreferenced_bytes)}) stay in packs still open, "
            "recent or mostly in use"
        )
    _console().say(text)


# -- cp -----------------------------------------------------------------------------------------


@cli.command("cp")
@click.argument("source")
@click.argument("target")
@click.option("--prefix", default="", help="Copy only the tensors below this prefix (e.g. model/).")
@click.option("--dry-run", is_flag=True, help="Only report what would be copied.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def cp_command(source: str, target: str, prefix: str, dry_run: bool, as_json: bool) -> None:
    """Copy the tensors and storage roots of SOURCE to TARGET (created if new), sending only the
    blobs TARGET lacks: a directory, s3://BUCKET/PREFIX, gs://... or az://....

    Bytes are checked against their digest as they are copied.  Names only TARGET holds are
    kept.  Safe while others write to either store.
    """
    with _progress("copying", nbytes=True) as progress:
        report = m.copy_store(source, target, prefix, dry_run=dry_run, progress=progress)
    if as_json:
        _echo_json(report.to_json())
        return
    verb = "would copy" if dry_run else "copied"
    _console().say(
        f"{verb} {_count(len(report.copied), 'tensor')} and {_count(report.roots, 'root')}, "
        f"sending {_count(report.blobs_sent, 'blob')} ({format_nbytes(report.bytes_sent)}); "
        f"{_count(report.unchanged, 'tensor')} already there"
    )


# -- verify -------------------------------------------------------------------------------------


@cli.command("verify")
@click.argument("store")
@_json_option
def verify_command(store: str, as_json: bool) -> None:
    """Re-hash every blob and re-check every record; exit 0 if healthy, 1 if damage is found.

    Read-only: nothing is repaired or deleted.
    """
    with _progress("verifying", nbytes=True) as progress:
        done = 0

        def advance(nbytes: int) -> None:
            nonlocal done
            done += nbytes
            if progress is not None:
                progress(done, None)

        report = m.verify(store, progress=advance)
    if as_json:
        _echo_json(report.to_json())
    else:
        out = _console()
        for finding in report.findings:
            out.say(f"{finding.severity}: {finding.kind}: {finding.message}")
        state = "healthy" if report.ok else f"DAMAGED ({_count(len(report.errors), 'problem')})"
        out.say(
            f"{report.location}: {state}; {_count(report.blobs_checked, 'blob')}, "
            f"{format_nbytes(report.bytes_checked)}, {_count(report.records_checked, 'tensor')} checked"
        )
    click.get_current_context().exit(EXIT_OK if report.ok else EXIT_FOUND)


# -- export and import --------------------------------------------------------------------------


@cli.command("export")
@click.argument("store")
@click.argument("out", type=click.Path(dir_okay=False))
@click.argument("prefix", default="")
@click.option(
    "--strip-prefix", is_flag=True, help="Name keys relative to PREFIX (for load_state_dict)."
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def export_command(store: str, out: str, prefix: str, strip_prefix: bool, overwrite: bool) -> None:
    """Write the tensors under PREFIX to the safetensors file OUT.

    Tensors sharing storage are written as separate contiguous copies (safetensors cannot hold
    shared views); they are listed in a note.
    """
    if os.path.exists(out) and not overwrite:
        raise m.ExportError(
            f"{os.path.abspath(out)} exists; choose another file, or add --overwrite to replace it"
        )
    with _progress("exporting") as progress:
        report = m.export_safetensors(
            store, out, prefix, strip_prefix=strip_prefix, overwrite=overwrite, progress=progress
        )
    console = _console()
    console.say(
        f"exported {_count(report.tensors, 'tensor')}, {format_nbytes(report.nbytes)}, to {report.out}"
    )
    for note in report.notes:
        console.say(f"note: {note}")


@cli.command("import")
@click.argument("store")
@click.argument("source", type=click.Path(exists=True))
@click.option("--prefix", default="", help="Store each tensor as PREFIX/NAME.")
def import_command(store: str, source: str, prefix: str) -> None:
    """Import SOURCE into STORE (created if new): a safetensors file, or a directory written by
    PyTorch's torch.utils._content_store.

    Each storage of such a directory (a repro save_dir holds only storages) is kept as a
    storage root under its PyTorch digest, so the repro script reads it from STORE with
    'tensorcas repro SCRIPT --save-dir STORE'.

    That directory format is pickle-based: its files are read with
    torch.load(weights_only=True), which refuses arbitrary objects, and only by this command.
    tensorcas stores themselves are never unpickled.
    """
    with _progress("importing") as progress:
        report = m.import_store(store, source, prefix, progress=progress)
    _console().say(
        f"imported {_count(len(report.names), 'tensor')}"
        + (
            f" and {_count(report.storages, 'storage')}"
            if report.kind == "torch-content-store"
            else ""
        )
        + f", {format_nbytes(report.nbytes)}, from {report.kind} {report.source}"
    )


# -- checkpoints (tensorcas.dcp) ----------------------------------------------------------------


@cli.group("checkpoints")
def checkpoints_group() -> None:
    """Checkpoints saved with tensorcas.dcp or tensorcas.save_state_dict (docs/checkpoints.md)."""


@checkpoints_group.command("ls")
@click.argument("store")
@_json_option
def checkpoints_ls(store: str, as_json: bool) -> None:
    """List checkpoints, oldest first: logical size, bytes it added (new), bytes it shares with
    other checkpoints, and bytes only it uses (what removing it and gc would free)."""
    listing = m.list_checkpoints(store)
    if as_json:
        _echo_json(listing.to_json())
        return
    rows: list[tuple[str, ...]] = [("logical", "new", "shared", "exclusive", "tensors", "name")]
    for c in listing.checkpoints:
        sizes = (c.logical_bytes, c.new_bytes, c.shared_bytes, c.exclusive_bytes)
        note = f"  (damaged: {c.problem})" if c.problem else ""
        rows.append((*map(format_nbytes, sizes), str(c.tensors), c.name + note))
    for inc in listing.incomplete:
        rows.append(
            (
                format_nbytes(inc.logical_bytes),
                "",
                "",
                "",
                str(inc.chunk_names),
                f"{inc.name}  (incomplete save)",
            )
        )
    out = _console()
    out.table(rows, right=(True, True, True, True, True, False))
    out.say(
        f"{_count(len(listing.checkpoints), 'checkpoint')}: "
        f"{format_nbytes(listing.logical_bytes)} logical, {format_nbytes(listing.stored_bytes)} stored"
    )


@checkpoints_group.command("rm")
@click.argument("store")
@click.argument("names", nargs=-1)
@click.option(
    "--keep-last", type=click.IntRange(min=0), help="Also remove all but the newest N checkpoints."
)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def checkpoints_rm(
    store: str, names: tuple[str, ...], keep_last: int | None, dry_run: bool
) -> None:
    """Remove checkpoints (or leftovers of incomplete saves) by NAME, and with --keep-last N all
    but the newest N.  Bytes are freed later by 'tensorcas gc'."""
    if not names and keep_last is None:
        raise click.UsageError("name the checkpoints to remove, or give --keep-last N")
    report = m.remove_checkpoints(store, names, keep_last=keep_last, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    out = _console()
    for name in report.removed:
        out.say(f"{verb} {name}")
    out.say(f"{verb} {_count(len(report.removed), 'checkpoint')}, {_count(report.names, 'name')}")


@checkpoints_group.command("export")
@click.argument("store")
@click.argument("name")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def checkpoints_export(store: str, name: str, out: str, overwrite: bool) -> None:
    """Write checkpoint NAME to OUT as a safetensors file: whole tensors by flattened key
    (model.layers.0.weight); non-tensor values in its metadata as JSON."""
    r = m.export_checkpoint(store, name, out, overwrite=overwrite)
    _console().say(
        f"exported {_count(r.tensors, 'tensor')}, {format_nbytes(r.nbytes)}, "
        f"and {_count(r.values, 'value')} to {r.out}"
    )


# -- repro --------------------------------------------------------------------------------------


@cli.command(
    "repro", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def repro_command(script: str, args: tuple[str, ...]) -> None:
    """Run a PyTorch repro script (repro.py, minifier_launcher.py) as 'python SCRIPT ARGS...'
    would, with PyTorch's content store replaced by tensorcas, so its save_dir is a tensorcas
    store.  ARGS go to the script: 'tensorcas repro minifier_launcher.py run --save-dir DIR'.
    The exit status is the script's.
    """
    from .torch_compat import run_script

    run_script(script, args)


cli.add_command(bisect_command)
cli.add_command(make_repro_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tensorcas`` console script and ``python -m tensorcas``."""
    cli.main(args=argv, prog_name="tensorcas")
