"""Commands for the integrations: ``checkpoints`` (``tensorcas.dcp``) and ``repro`` (PyTorch's repro
scripts).  ``bisect`` and ``make-repro`` live in ``tensorcas.record_cli``."""

from __future__ import annotations

import click

from ._base import (
    _console,
    _count,
    _echo_json,
    _json_option,
    cli,
    format_nbytes,
    m,
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
    from ..torch_compat import run_script

    run_script(script, args)


