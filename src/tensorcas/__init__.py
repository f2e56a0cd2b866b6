"""tensorcas: a content-addressed store for PyTorch tensors.

Storages are stored once under the BLAKE3 digest of their bytes; tensors are named records
(dtype, shape, stride, offset) that point at them.  Nothing is ever unpickled, and everything read
from a store is validated, so stores from strangers are safe to open.

Importing the package registers ``torch.ops.tensorcas.load_tensor`` (right after torch is imported,
if it is not yet).  The package itself does not import torch: the command line and the functions
that work on records and bytes (``ls``, ``du``, ``gc``, ``verify``) start without it, and the names
that need torch (the reader, the writer, the operator's context) import it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes
from ._torch_hook import register_when_torch_is_imported
from .errors import (
    BlobLostError,
    BlobNotFoundError,
    CheckpointError,
    CheckpointNotFoundError,
    CorruptObjectError,
    DamagedStoreError,
    ExportError,
    Finding,
    FormatError,
    ImportSourceError,
    InvalidDigestError,
    InvalidKeyError,
    InvalidNameError,
    ReaderContextError,
    ReadOnlyStoreError,
    RecordingError,
    ResourceLimitError,
    StoreError,
    StoreIOError,
    StoreNotFoundError,
    TensorNotFoundError,
    UnsafeFileError,
    UnsupportedTensorError,
)

if TYPE_CHECKING:
    from .dcp import load_state_dict, save_state_dict
    from .format import TensorRecord
    from .hashing import hash_storage
    from .maintenance.bisect import BisectResult, bisect
    from .maintenance.diff import DiffResult, diff
    from .maintenance.du import du
    from .maintenance.gc import gc, rm
    from .maintenance.listing import ls
    from .maintenance.show import show
    from .maintenance.transfer import export_safetensors, import_store
    from .maintenance.verify import VerifyReport, verify
    from .ops import load_tensor_reader
    from .reader import ContentStoreReader
    from .recording import Recorder, RecordingBackend, make_repro, record, recording_backend
    from .writer import ContentStoreWriter

__version__ = "0.1.0"

#: Names imported on first use, and the module each lives in: the command line's ``--help``
#: imports none of them, ``ls`` only what reads records, and nothing imports torch until a tensor
#: is made.
_LAZY = {
    "TensorRecord": ".format",
    "hash_storage": ".hashing",
    **dict.fromkeys(
        (
            "DiffResult",
            "VerifyReport",
            "diff",
            "du",
            "export_safetensors",
            "gc",
            "import_store",
            "ls",
            "rm",
            "show",
            "verify",
        ),
        ".maintenance",
    ),
    "ContentStoreReader": ".reader",
    "ContentStoreWriter": ".writer",
    "load_tensor_reader": ".ops",
    "load_state_dict": ".dcp",
    "save_state_dict": ".dcp",
    "BisectResult": ".maintenance.bisect",
    "bisect": ".maintenance.bisect",
    **dict.fromkeys(("Recorder", "RecordingBackend", "make_repro", "record", "recording_backend"), ".recording"),
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())


register_when_torch_is_imported()

__all__ = [
    "BisectResult",
    "BlobLostError",
    "BlobNotFoundError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ContentStoreReader",
    "ContentStoreWriter",
    "CorruptObjectError",
    "DamagedStoreError",
    "DiffResult",
    "ExportError",
    "Finding",
    "FormatError",
    "ImportSourceError",
    "InvalidDigestError",
    "InvalidKeyError",
    "InvalidNameError",
    "ReadOnlyStoreError",
    "ReaderContextError",
    "Recorder",
    "RecordingBackend",
    "RecordingError",
    "ResourceLimitError",
    "StoreError",
    "StoreIOError",
    "StoreNotFoundError",
    "TensorNotFoundError",
    "TensorRecord",
    "UnsafeFileError",
    "UnsupportedTensorError",
    "VerifyReport",
    "__version__",
    "bisect",
    "diff",
    "du",
    "export_safetensors",
    "gc",
    "hash_storage",
    "import_store",
    "load_state_dict",
    "load_tensor_reader",
    "ls",
    "make_repro",
    "record",
    "recording_backend",
    "rm",
    "save_state_dict",
    "show",
    "verify",
]
