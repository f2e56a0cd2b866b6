"""The registry of workloads: each times its contenders on the same tensors, then adds the rows
of its goals (``goals.GOALS``).  ``WORKLOADS`` runs and reports them in the order of ``ORDER``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .harness import Config, Results

Workload = Callable[[Config, Results, dict[str, torch.Tensor]], None]

ORDER = ("write", "rewrite", "partial", "read", "hash", "small", "many", "lazy", "rss")


@dataclass(frozen=True)
class Registered:
    run: Workload
    large: bool  # needs the shared large tensors


_REGISTERED: dict[str, Registered] = {}


def workload(name: str, *, large: bool = False) -> Callable[[Workload], Workload]:
    """Register a workload under ``name`` (one of :data:`ORDER`)."""
    if name not in ORDER:
        raise ValueError(f"workload {name!r} is not in ORDER")

    def register(fn: Workload) -> Workload:
        _REGISTERED[name] = Registered(fn, large)
        return fn

    return register


def workloads() -> dict[str, Registered]:
    """Every registered workload, in :data:`ORDER`."""
    from . import wl_large, wl_small  # noqa: F401  (registering is importing)

    return {name: _REGISTERED[name] for name in ORDER if name in _REGISTERED}
