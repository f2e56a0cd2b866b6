"""Whole-store operations: verify, ls, show, du, diff, rm, gc, import/export, and cp.

Each is one library function that the command line calls; none needs the command line.
"""

from __future__ import annotations

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
from .listing import list_roots, ls
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
