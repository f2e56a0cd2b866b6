"""The commands that change or check stores: ``rm``, ``gc``, ``cp``, ``verify``, ``export`` and
``import``."""

from __future__ import annotations

import os
import re
from typing import Any

import click

from ._base import (
    EXIT_FOUND,
    EXIT_OK,
    _console,
    _count,
    _echo_json,
    _json_option,
    _progress,
    cli,
    format_nbytes,
    m,
)

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


