"""Whole-store operations: verify, ls, show, du, diff, rm, gc, and import/export.

Each is one library function that the command line calls; none needs the command line.
Importing this package does not import torch: ``ls``, ``du``, ``rm`` and ``gc`` and ``verify`` work
on records and bytes, and the functions that look at values import it when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .diff import DiffResult, Target, TensorDiff, diff, parse_target
from .du import DiskUsage, du
from .gc import DEFAULT_GRACE_SECONDS, DamagedStoreError, GcReport, RmReport, gc, rm
from .listing import ls
from .show import Histogram, TensorStats, TensorSummary, show
from .verify import Finding, VerifyReport, verify

if TYPE_CHECKING:
    from .transfer import (
        ExportError,
        ExportReport,
        ImportReport,
        ImportSourceError,
        export_safetensors,
        import_store,
    )

#: Import and export need torch and safetensors: their module is imported on first use.
_TRANSFER = frozenset(
    {
        "ExportError",
        "ExportReport",
        "ImportReport",
        "ImportSourceError",
        "export_safetensors",
        "import_store",
    }
)


def __getattr__(name: str) -> Any:
    if name not in _TRANSFER:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import transfer

    value = getattr(transfer, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | _TRANSFER)

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "DamagedStoreError",
    "DiffResult",
    "DiskUsage",
    "ExportError",
    "ExportReport",
    "Finding",
    "GcReport",
    "Histogram",
    "ImportReport",
    "ImportSourceError",
    "RmReport",
    "Target",
    "TensorDiff",
    "TensorStats",
    "TensorSummary",
    "VerifyReport",
    "diff",
    "du",
    "export_safetensors",
    "gc",
    "import_store",
    "ls",
    "parse_target",
    "rm",
    "show",
    "verify",
]
