"""Command-line pieces for recorded runs: ``bisect``, ``make-repro`` and the ``--plot`` options of
``show`` and ``diff``.  ``tensorcas.cli`` adds them to the ``tensorcas`` command."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from .errors import StoreError
from .maintenance.diff import DiffResult, parse_target

EXIT_OK = 0
EXIT_FOUND = 1

plot_option = click.option(
    "--plot",
    "plot",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also write a PNG picture to this file (needs matplotlib: pip install 'tensorcas[plot]').",
)


def _tolerances(specs: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    out = {}
    for spec in specs:
        dtype, _, pair = spec.partition("=")
        parts = pair.split(",")
        try:
            if not dtype or len(parts) != 2:
                raise ValueError(spec)
            out[dtype.strip()] = (float(parts[0]), float(parts[1]))
        except ValueError:
            raise click.BadParameter(
                f"{spec!r}: write DTYPE=RTOL,ATOL, for example bfloat16=1e-2,1e-5",
                param_hint="--tol",
            ) from None
    return out


@click.command("bisect")
@click.argument("a")
@click.argument("b")
@click.option(
    "--rtol", type=click.FloatRange(min=0), default=None, help="Relative tolerance for every dtype."
)
@click.option(
    "--atol", type=click.FloatRange(min=0), default=None, help="Absolute tolerance for every dtype."
)
@click.option(
    "--tol",
    "tol",
    multiple=True,
    metavar="DTYPE=RTOL,ATOL",
    help="Tolerance for one dtype (repeatable), e.g. bfloat16=1e-2,1e-5.",
)
@click.option(
    "--context",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many of the still-close tensors before the divergence to show.",
)
@click.option(
    "--all",
    "compare_all",
    is_flag=True,
    help="Compare the whole run, not only up to the divergence.",
)
@plot_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
def bisect_command(
    a: str,
    b: str,
    rtol: float | None,
    atol: float | None,
    tol: tuple[str, ...],
    context: int,
    compare_all: bool,
    plot: str | None,
    as_json: bool,
) -> None:
    """Find the first recorded tensor where run A and run B disagree; exit 1 if there is one.

    A and B are STORE:PREFIX recordings (tensorcas.record or tensorcas.recording_backend), lined
    up by name in A's execution order.  Default tolerances are torch.testing.assert_close's for
    each dtype.  --plot draws the error of every compared tensor along the run (implies --all).
    """
    from .maintenance.bisect import bisect, render

    result = bisect(
        a,
        b,
        rtol=rtol,
        atol=atol,
        tolerances=_tolerances(tol),
        context=context,
        compare_all=compare_all or plot is not None,
    )
    if plot is not None:
        from .plotting import plot_error_along_run

        plot_error_along_run(result, plot)
    if as_json:
        doc = result.to_json()
        if plot is not None:
            doc["plot"] = os.fspath(plot)
        click.echo(json.dumps(doc, indent=2, allow_nan=False))
    else:
        for line in render(result):
            click.echo(line)
        if plot is not None:
            click.echo(f"wrote {plot}")
    click.get_current_context().exit(EXIT_OK if result.ok else EXIT_FOUND)


@click.command("make-repro")
@click.argument("store")
@click.argument("prefix")
@click.option(
    "--graph", default=0, show_default=True, type=click.IntRange(min=0), help="Graph number."
)
@click.option(
    "--call", default=0, show_default=True, type=click.IntRange(min=0), help="Call of that graph."
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write the script here."
)
def make_repro_command(store: str, prefix: str, graph: int, call: int, output: str | None) -> None:
    """Write a standalone script that replays one graph call recorded by recording_backend.

    The script loads the call's inputs from STORE with load_tensor, runs the graph (eagerly, or
    with --backend NAME) and compares its outputs with the recorded ones.  Its code comes from the
    store: read it before running a script made from a store you did not write.
    """
    from .recording.repro import make_repro

    text = make_repro(store, prefix, graph, call, store=os.path.abspath(store))
    if output is None:
        click.echo(text, nl=False)
        return
    if os.path.exists(output):
        raise StoreError(f"{output} exists; choose another file or remove it first")
    with open(output, "x", encoding="utf-8") as f:
        f.write(text)
    click.echo(f"wrote {output}: python {output} [--backend inductor]")


def plot_show(store: str, name: str, plot: str | None, bins: int) -> None:
    """``show --plot``: a histogram of the tensor's values."""
    if plot is not None:
        from .plotting import plot_histogram

        plot_histogram(store, name, plot, bins=max(bins, 10))
        click.echo(f"wrote {plot}", err=True)


def plot_diff(a: str, b: str, result: DiffResult, plot: str | None) -> None:
    """``diff --plot``: heat maps of the error of the first pair that differs (or is merely
    close, when none differs)."""
    if plot is None:
        return
    from .plotting import plot_error_heatmap

    pairs = [e for e in result.entries if e.name_a is not None and e.name_b is not None]
    chosen: Any = next(
        (e for e in pairs if e.status == "different" and not e.reason.startswith("shape")), None
    )
    chosen = chosen or next((e for e in pairs if e.status == "close"), None)
    if chosen is None:
        click.echo("no plot: no pair of tensors differs", err=True)
        return
    ta, tb = parse_target(a), parse_target(b)
    plot_error_heatmap(ta.loc, chosen.name_a, tb.loc, chosen.name_b, plot)
    click.echo(f"wrote {plot} ({chosen.key})", err=True)
