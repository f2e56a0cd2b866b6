"""PNG pictures of stored tensors: a histogram of values, a heat map of the error between two
tensors, and the error of each recorded tensor along a run.

matplotlib is an optional extra (``pip install 'tensorcas[plot]'``).  Figures are drawn with its
object API on an Agg canvas, never through ``pyplot``, so plotting does not touch the caller's
matplotlib state (backend, open figures).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import torch

from .errors import PlotUnavailableError, StoreError
from .maintenance._common import check_walkable
from .maintenance._walk import iter_chunks, to_wide
from .maintenance.bisect import BisectResult
from .reader import ContentStoreReader
from .store import Location

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Heat maps larger than this (rows or columns) are reduced by taking the largest error of each
#: block, so a large tensor still makes a readable picture and a small file.
MAX_HEATMAP_SIDE = 512


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailableError(
            f"plotting needs matplotlib, which is not installed ({exc}); install it with "
            "pip install 'tensorcas[plot]'"
        ) from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out: str | os.PathLike[str]) -> str:
    path = os.fspath(out)
    fig.savefig(path, format="png")
    return path


def plot_histogram(loc: Location, name: str, out: str | os.PathLike[str], *, bins: int = 50) -> str:
    """Write a histogram of tensor ``name``'s finite values (|z| for complex) to the PNG ``out``."""
    reader = ContentStoreReader(loc, cache=False, mmap=True)
    record = reader.read_tensor_metadata(name)
    check_walkable(record)
    tensor = reader.read_tensor(name).detach()
    lo, hi, finite, total = math.inf, -math.inf, 0, 0
    for chunk in iter_chunks(tensor):
        w = _magnitude(chunk)
        w = w[w.isfinite()]
        total += chunk.numel()
        if w.numel():
            finite += w.numel()
            lo, hi = min(lo, float(w.min())), max(hi, float(w.max()))
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    if finite:
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        counts = torch.zeros(bins, dtype=torch.float64)
        for chunk in iter_chunks(tensor):
            w = _magnitude(chunk)
            w = w[w.isfinite()]
            counts += torch.histc(w, bins=bins, min=lo, max=hi)
        edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
        ax.stairs(counts.tolist(), edges.tolist(), fill=True)
    else:
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    what = "|value|" if tensor.dtype.is_complex else "value"
    ax.set_xlabel(what)
    ax.set_ylabel("count")
    ax.set_title(
        f"{name}\n{record.dtype} {list(record.shape)}, {finite}/{total} finite", fontsize=9
    )
    return _save(fig, out)


def _magnitude(chunk: torch.Tensor) -> torch.Tensor:
    wide = to_wide(chunk)
    return wide.abs() if wide.is_complex() else wide


def plot_error_heatmap(
    loc_a: Location, name_a: str, loc_b: Location, name_b: str, out: str | os.PathLike[str]
) -> str:
    """Write heat maps of ``|a - b|`` and ``|a - b| / |b|`` to the PNG ``out``.

    The tensor is shown as a matrix: its last dimension across, every other dimension folded
    down.  Larger matrices are reduced to at most ``MAX_HEATMAP_SIDE`` on a side by keeping each
    block's largest error."""
    reader_a = ContentStoreReader(loc_a, cache=False, mmap=True)
    reader_b = reader_a if loc_a == loc_b else ContentStoreReader(loc_b, cache=False, mmap=True)
    ra, rb = reader_a.read_tensor_metadata(name_a), reader_b.read_tensor_metadata(name_b)
    if ra.shape != rb.shape:
        raise StoreError(
            f"cannot draw the error of {name_a!r} {list(ra.shape)} against {name_b!r} {list(rb.shape)}: "
            "their shapes differ"
        )
    check_walkable(ra)
    a = to_wide(reader_a.read_tensor(name_a).detach())
    b = to_wide(reader_b.read_tensor(name_b).detach())
    if a.is_complex() != b.is_complex():
        a, b = a.to(torch.complex128), b.to(torch.complex128)
    err = (a - b).abs()
    err = torch.where((a == b) | (a.isnan() & b.isnan()), torch.zeros_like(err), err)
    err = torch.where(err.isnan(), torch.full_like(err, math.inf), err)
    ref = b.abs()
    rel = torch.where(ref > 0, err / ref, torch.where(err > 0, math.inf, 0.0))
    fig = _figure(11, 4.5)
    for i, (values, title) in enumerate(
        ((err, "absolute error |a - b|"), (rel, "relative error |a - b| / |b|"))
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        matrix = _as_matrix(values)
        finite = matrix[matrix.isfinite()]
        top = float(finite.max()) if finite.numel() else 0.0
        shown = torch.where(matrix.isfinite(), matrix, torch.full_like(matrix, top))
        image = ax.imshow(shown.numpy(), aspect="auto", interpolation="nearest", cmap="viridis")
        fig.colorbar(image, ax=ax)
        worst = float(values.max()) if values.numel() else 0.0
        ax.set_title(f"{title}\nmax {worst:.3g}", fontsize=9)
        ax.set_xlabel(f"last dimension ({values.shape[-1] if values.dim() else 1})")
        ax.set_ylabel("other dimensions, folded")
    fig.suptitle(f"{name_a}  vs  {name_b}\n{ra.dtype} {list(ra.shape)}", fontsize=9)
    return _save(fig, out)


def _as_matrix(values: torch.Tensor) -> torch.Tensor:
    if values.dim() == 0:
        matrix = values.reshape(1, 1)
    elif values.dim() == 1:
        matrix = values.reshape(1, -1)
    else:
        matrix = values.reshape(-1, values.shape[-1])
    if matrix.numel() == 0:
        return torch.zeros(1, 1, dtype=torch.float64)
    rows, cols = matrix.shape
    if rows > MAX_HEATMAP_SIDE or cols > MAX_HEATMAP_SIDE:
        inf = torch.isinf(matrix)
        pooled = torch.nn.functional.adaptive_max_pool2d(
            torch.where(inf, torch.full_like(matrix, torch.finfo(torch.float64).max), matrix)[
                None, None
            ],
            (min(rows, MAX_HEATMAP_SIDE), min(cols, MAX_HEATMAP_SIDE)),
        )[0, 0]
        matrix = torch.where(
            pooled == torch.finfo(torch.float64).max, torch.full_like(pooled, math.inf), pooled
        )
    return matrix


def plot_error_along_run(result: BisectResult, out: str | os.PathLike[str]) -> str:
    """Write the largest absolute and relative error of every compared tensor, in execution
    order, to the PNG ``out``; the first divergence and step boundaries are marked."""
    fig = _figure(11, 4.5)
    ax = fig.add_subplot()
    xs = [c.position + 1 for c in result.compared]  # 1-based, as the text report counts
    floor = 1e-30  # zero errors drawn at the bottom of the log scale

    def points(values: list[float]) -> list[float]:
        return [max(v, floor) if math.isfinite(v) else 1e30 for v in values]

    ax.plot(
        xs,
        points([c.max_abs_error for c in result.compared]),
        ".-",
        label="max abs error",
        markersize=3,
    )
    ax.plot(
        xs,
        points([c.max_rel_error for c in result.compared]),
        ".-",
        label="max rel error",
        markersize=3,
    )
    ax.set_yscale("log")
    for prev, cur in zip(result.compared, result.compared[1:]):
        if cur.step != prev.step:
            ax.axvline(cur.position + 0.5, color="0.8", linewidth=0.8, linestyle=":")
    if result.first is not None:
        ax.axvline(
            result.first.position + 1,
            color="red",
            linewidth=1.2,
            label=f"first divergence: {result.first.key}",
        )
    ax.set_xlabel("position of the recorded tensor, in execution order (dotted: step or call boundaries)")
    ax.set_ylabel("error (zero drawn at 1e-30)")
    ax.set_title(f"{result.a}  vs  {result.b}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, out)
