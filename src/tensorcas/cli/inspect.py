"""The read-only commands: ``ls``, ``show``, ``du`` and ``diff``."""

from __future__ import annotations

from typing import Any

import click

from .._cli_text import escape
from ..errors import TensorNotFoundError
from ..record_cli import plot_diff, plot_option, plot_show
from ._base import (
    EXIT_FOUND,
    EXIT_OK,
    _console,
    _count,
    _echo_json,
    _json_option,
    _progress,
    _shape,
    cli,
    format_nbytes,
    m,
    record_to_json,
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
    try:
        with _progress("reading") as progress:
            summary = m.show(store, name, values=values, bins=bins, progress=progress)
    except TensorNotFoundError as exc:
        if "deleted" in str(exc):
            raise
        raise TensorNotFoundError(_no_match(store, name)) from None
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
            ("NaN", str(s.nan)),
            ("infinite", _infinities(s)),
            ("zeros", str(s.zeros)),
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


def _infinities(s: Any) -> str:
    """How many elements are infinite, by sign where values have one (not for |z|)."""
    if s.inf == 0 or s.of != "values":
        return str(s.inf)
    return f"{s.inf} ({s.posinf} +inf, {s.neginf} -inf)"


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
        paired = sum(result.count(s) for s in ("identical", "close", "different"))
        if not paired and result.count("only-in-a") and result.count("only-in-b"):
            out.say(
                "note: no name of A matches a name of B, so nothing was compared; names are taken "
                "below each side's prefix (A:PREFIX/ and B:PREFIX/): did one side miss its prefix?"
            )
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


