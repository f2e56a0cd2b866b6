"""The ``tensorcas`` command: a thin layer over ``tensorcas.maintenance``.

Each command parses its arguments, calls one library function and prints its result: as text
for people, or with ``--json`` (read-only commands) as one JSON document for scripts.  Exit codes:
0 success; 1 the command worked and found differences (``diff``) or damage (``verify``); 2 a
usage error, or a store error, printed as one line without a traceback.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from . import maintenance as m
from .errors import StoreError
from .maintenance._common import format_nbytes, record_to_json
from .record_cli import bisect_command, make_repro_command, plot_diff, plot_option, plot_show

EXIT_OK = 0
EXIT_FOUND = 1
EXIT_ERROR = 2

_EPILOG = """\b
Examples:
  tensorcas ls dumps/run1 model/
  tensorcas show dumps/run1 model/layer.0/weight --values 8
  tensorcas du dumps/run1
  tensorcas diff dumps/run1 dumps/run2 --rtol 1e-4
  tensorcas diff dumps/run1:step1/ dumps/run1:step2/
  tensorcas rm dumps/run1 scratch/ old/weight
  tensorcas gc dumps/run1 --dry-run
  tensorcas verify dumps/run1 --json
  tensorcas export dumps/run1 model.safetensors model/ --strip-prefix
  tensorcas import dumps/run1 model.safetensors --prefix imported
  tensorcas repro minifier_launcher.py run
  tensorcas bisect dumps:run-a dumps:run-b --plot errors.png

\b
Exit codes: 0 ok; 1 differences (diff, bisect) or damage (verify) found;
2 usage error, or store error (one line on stderr).
"""


class _Out:
    """Rich output on a terminal; plain text without trailing padding when piped."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        if self.tty:
            self.console = Console(highlight=False)
        else:
            self.console = Console(highlight=False, width=100_000, no_color=True, soft_wrap=True)

    def print(self, renderable: Any) -> None:
        if self.tty:
            self.console.print(renderable)
            return
        with self.console.capture() as captured:
            self.console.print(renderable)
        click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def _console() -> _Out:
    return _Out()


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, allow_nan=False, default=str))


@contextmanager
def _progress(
    description: str, *, nbytes: bool = False
) -> Iterator[Callable[[int, int | None], None] | None]:
    """A rich progress bar, only when stdout is a terminal; yields the library's callback."""
    if not sys.stdout.isatty():
        yield None
        return
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
        TextColumn(description), BarColumn(), amount, TimeElapsedColumn(), transient=True
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
            click.echo(f"tensorcas: error: {exc}", err=True)
            ctx.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            # Not 1, which means "differences or damage found".  Everything written is whole.
            click.echo("tensorcas: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tensorcas")
def cli() -> None:
    """Inspect and maintain tensorcas stores: content-addressed stores of PyTorch tensors.

    STORE is a store directory, or object storage: s3://BUCKET/PREFIX (gs://, az://), configured
    from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID...).  Read-only commands (ls, show,
    du, diff, verify) never write to it and accept --json.
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
        table = Table(box=None, show_header=True, pad_edge=False)
        for column, justify in (("size", "right"), ("blob", "left"), ("aliases", "left")):
            table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for root in found:
            table.add_row(format_nbytes(root.nbytes), root.blob, " ".join(root.aliases))
        _console().print(table)
        return
    records = m.ls(store, prefix)
    if as_json:
        _echo_json([record_to_json(r) for r in records])
        return
    table = Table(box=None, show_header=True, pad_edge=False)
    for column, justify in (
        ("dtype", "left"),
        ("shape", "left"),
        ("size", "right"),
        ("name", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in records:
        table.add_row(r.dtype, _shape(r.shape), format_nbytes(r.view_nbytes), escape(r.name))
    _console().print(table)


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
    summary = m.show(store, name, values=values, bins=bins)
    plot_show(store, name, plot, bins)
    if as_json:
        _echo_json(summary.to_json())
        return
    out = _console()
    r = summary.record
    out.print(f"[bold]{escape(r.name)}[/bold]")
    rows = [
        ("dtype", r.dtype),
        ("shape", _shape(r.shape)),
        ("stride", _shape(r.stride)),
        ("offset", str(r.offset)),
        ("requires_grad", str(r.requires_grad).lower()),
        ("size", f"{format_nbytes(r.view_nbytes)} ({r.numel} elements)"),
        ("blob", f"{r.blob} ({format_nbytes(r.nbytes)})"),
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
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="dim", no_wrap=True)
    table.add_column(no_wrap=True)
    for key, value in rows:
        table.add_row(key, escape(value))
    out.print(table)
    if summary.histogram is not None:
        out.print("histogram (finite values):")
        for line in summary.histogram.lines():
            out.print("  " + escape(line))
    if summary.values is not None:
        out.print(
            f"first {len(summary.values)} values: "
            + escape(", ".join(_num(v) for v in summary.values))
        )
    for note in summary.notes:
        out.print(f"note: {escape(note)}")


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
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="dim", no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_row("tensors", str(usage.names), "")
    table.add_row("logical", format_nbytes(usage.logical_bytes), f"{usage.logical_bytes} bytes")
    table.add_row(
        "stored (referenced)",
        format_nbytes(usage.referenced_bytes),
        f"{usage.referenced_blobs} blobs",
    )
    table.add_row(
        "unreferenced",
        format_nbytes(usage.unreferenced_bytes),
        f"{usage.unreferenced_blobs} blobs (gc frees these)",
    )
    if usage.roots:
        table.add_row(
            "storage roots",
            format_nbytes(usage.root_bytes),
            f"{usage.roots} blob(s) kept without a name (tensorcas ls --roots)",
        )
    table.add_row("logs", format_nbytes(usage.log_bytes), "")
    table.add_row("dedupe ratio", f"{usage.dedupe_ratio:.2f}x", "")
    if usage.missing_blobs:
        table.add_row("missing blobs", str(usage.missing_blobs), "run 'tensorcas verify'")
    if usage.unreadable:
        table.add_row("unreadable", str(usage.unreadable), "not regular files; run 'tensorcas verify'")
    out.print(table)
    if usage.largest:
        out.print("largest tensors:")
        big = Table(box=None, show_header=False, pad_edge=False)
        for justify in ("right", "left", "left", "left"):
            big.add_column(justify=justify, no_wrap=True)
        for r in usage.largest:
            big.add_row(
                "  " + format_nbytes(r.view_nbytes), r.dtype, _shape(r.shape), escape(r.name)
            )
        out.print(big)


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
    existing directory).  Names are matched below the prefixes, so 'runs/a:step1/' against
    'runs/a:step2/' pairs step1/x with step2/x.  A pair is close when
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
            out.print(escape(_diff_line(e)))
        counts = ", ".join(
            f"{result.count(s)} {s}"
            for s in ("identical", "close", "different", "only-in-a", "only-in-b")
        )
        first = result.first_difference
        out.print(f"{len(result.entries)} compared: {counts}")
        if first is not None:
            out.print(escape(f"first difference: {first.key}"))
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
        out.print(escape(f"{verb} {name}"))
    for digest in report.removed_roots:
        out.print(f"{verb} root {digest}")
    out.print(
        f"{verb} {len(report.removed)} tensor(s)"
        + (f", {len(report.removed_roots)} root(s)" if roots else "")
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
        f"{verb} {len(report.removed_blobs)} blob(s), {len(report.removed_packs)} pack(s) "
        f"and {len(report.removed_temporaries)} temporary file(s), "
        f"{format_nbytes(report.bytes_freed)}; {report.referenced} blob(s) in use, "
        f"{report.kept_recent} unused but newer than the grace period"
    )
    if report.packed_unreferenced_blobs:
        text += (
            f"; {report.packed_unreferenced_blobs} unused small blob(s) "
            f"({format_nbytes(report.packed_unreferenced_bytes)}) stay in packs still open, "
            "recent or mostly in use"
        )
    _console().print(text)


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
    _console().print(
        f"{verb} {len(report.copied)} tensor(s) and {report.roots} root(s), sending "
        f"{report.blobs_sent} blob(s) ({format_nbytes(report.bytes_sent)}); "
        f"{report.unchanged} tensor(s) already there"
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
            out.print(escape(f"{finding.severity}: {finding.kind}: {finding.message}"))
        state = "healthy" if report.ok else f"DAMAGED ({len(report.errors)} problem(s))"
        out.print(
            f"{report.location}: {state}; {report.blobs_checked} blob(s), "
            f"{format_nbytes(report.bytes_checked)}, {report.records_checked} tensor(s) checked"
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
    with _progress("exporting") as progress:
        report = m.export_safetensors(
            store, out, prefix, strip_prefix=strip_prefix, overwrite=overwrite, progress=progress
        )
    console = _console()
    console.print(
        escape(
            f"exported {report.tensors} tensor(s), {format_nbytes(report.nbytes)}, to {report.out}"
        )
    )
    for note in report.notes:
        console.print(escape(f"note: {note}"))


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
    _console().print(
        escape(
            f"imported {len(report.names)} tensor(s)"
            + (f" and {report.storages} storage(s)" if report.kind == "torch-content-store" else "")
            + f", {format_nbytes(report.nbytes)}, from {report.kind} {report.source}"
        )
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
    table = Table(box=None, show_header=True, pad_edge=False)
    for column in ("logical", "new", "shared", "exclusive", "tensors", "name"):
        table.add_column(column, justify="left" if column == "name" else "right", no_wrap=True)
    for c in listing.checkpoints:
        sizes = (c.logical_bytes, c.new_bytes, c.shared_bytes, c.exclusive_bytes)
        note = f"  (damaged: {c.problem})" if c.problem else ""
        table.add_row(*map(format_nbytes, sizes), str(c.tensors), escape(c.name + note))
    for s in listing.incomplete:
        table.add_row(
            format_nbytes(s.logical_bytes),
            "",
            "",
            "",
            str(s.chunk_names),
            escape(f"{s.name}  (incomplete save)"),
        )
    out = _console()
    out.print(table)
    out.print(
        f"{len(listing.checkpoints)} checkpoint(s): {format_nbytes(listing.logical_bytes)} logical, {format_nbytes(listing.stored_bytes)} stored"
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
    for name in report.removed:
        _console().print(escape(f"{verb} {name}"))
    _console().print(f"{verb} {len(report.removed)} checkpoint(s), {report.names} name(s)")


@checkpoints_group.command("export")
@click.argument("store")
@click.argument("name")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def checkpoints_export(store: str, name: str, out: str, overwrite: bool) -> None:
    """Write checkpoint NAME to OUT as a safetensors file: whole tensors by flattened key
    (model.layers.0.weight); non-tensor values in its metadata as JSON."""
    r = m.export_checkpoint(store, name, out, overwrite=overwrite)
    _console().print(escape(f"exported {r.tensors} tensor(s), {format_nbytes(r.nbytes)}, and {r.values} value(s) to {r.out}"))


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
