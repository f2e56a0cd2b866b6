"""Whole-store operations: verify, ls, show, du, diff, rm, gc, import/export, and cp.

Each is one library function that the command line calls; none needs the command line.
Importing this package does not import torch: ``ls``, ``du``, ``rm``, ``gc`` and ``verify`` work
on records and bytes; ``show``, ``diff`` and import/export import it when they look at values.
Each function's module is imported on first use of one of its names, so that a command starts
with only what it needs.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from .._lazy import lazy_attributes
from .listing import list_roots, ls

if TYPE_CHECKING:
    from .checkpoints import (
        CheckpointExport,
        CheckpointInfo,
        CheckpointList,
        IncompleteSave,
        RemoveReport,
        export_checkpoint,
        list_checkpoints,
        remove_checkpoints,
    )
    from .copy import CopyReport, copy_store
    from .diff import DiffResult, Target, TensorDiff, diff, parse_target
    from .du import DiskUsage, du
    from .gc import DEFAULT_GRACE_SECONDS, DamagedStoreError, GcReport, RmReport, gc, rm
    from .show import Histogram, TensorStats, TensorSummary, show
    from .transfer import (
        ExportError,
        ExportReport,
        ImportReport,
        ImportSourceError,
        export_safetensors,
        import_store,
    )
    from .verify import Finding, VerifyReport, verify

#: Names imported on first use, and the module each lives in.
_LAZY = {
    **dict.fromkeys(
        (
            "CheckpointExport",
            "CheckpointInfo",
            "CheckpointList",
            "IncompleteSave",
            "RemoveReport",
            "export_checkpoint",
            "list_checkpoints",
            "remove_checkpoints",
        ),
        ".checkpoints",
    ),
    **dict.fromkeys(("CopyReport", "copy_store"), ".copy"),
    **dict.fromkeys(("DiskUsage", "du"), ".du"),
    **dict.fromkeys(
        ("DEFAULT_GRACE_SECONDS", "DamagedStoreError", "GcReport", "RmReport", "gc", "rm"), ".gc"
    ),
    **dict.fromkeys(("Finding", "VerifyReport", "verify"), ".verify"),
    **dict.fromkeys(("DiffResult", "Target", "TensorDiff", "diff", "parse_target"), ".diff"),
    **dict.fromkeys(("Histogram", "TensorStats", "TensorSummary", "show"), ".show"),
    **dict.fromkeys(
        (
            "ExportError",
            "ExportReport",
            "ImportReport",
            "ImportSourceError",
            "export_safetensors",
            "import_store",
        ),
        ".transfer",
    ),
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())


_SHADOWED = frozenset({"diff", "du", "gc", "show", "verify"})


class _Package(types.ModuleType):
    """This package, where the functions ``diff``, ``du``, ``gc``, ``show`` and ``verify`` keep
    their names.

    Importing a submodule makes it an attribute of its package, and these are also the names of
    the functions those submodules define, which this package exports.  So the import system's
    assignment of the submodule is ignored for those names: ``maintenance.gc`` is always the
    function (as it was when this package imported every submodule eagerly)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            vars(self).pop(name, None)  # resolved by __getattr__ on next use
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "CheckpointExport",
    "CheckpointInfo",
    "CheckpointList",
    "CopyReport",
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
    "IncompleteSave",
    "RemoveReport",
    "RmReport",
    "Target",
    "TensorDiff",
    "TensorStats",
    "TensorSummary",
    "VerifyReport",
    "copy_store",
    "diff",
    "du",
    "export_checkpoint",
    "export_safetensors",
    "gc",
    "import_store",
    "list_checkpoints",
    "list_roots",
    "ls",
    "parse_target",
    "remove_checkpoints",
    "rm",
    "show",
    "verify",
]
