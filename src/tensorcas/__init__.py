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

import importlib
from typing import TYPE_CHECKING, Any

from ._torch_hook import register_when_torch_is_imported
from .errors import (
    BlobNotFoundError,
    CorruptObjectError,
    FormatError,
    InvalidDigestError,
    InvalidNameError,
    ReaderContextError,
    StoreError,
    StoreIOError,
    StoreNotFoundError,
    TensorNotFoundError,
    UnsupportedTensorError,
)
from .format import TensorRecord
from .hashing import hash_storage
from .maintenance import (
    DiffResult,
    VerifyReport,
    diff,
    du,
    gc,
    ls,
    rm,
    show,
    verify,
)

if TYPE_CHECKING:
    from .maintenance import export_safetensors, import_store
    from .ops import load_tensor_reader
    from .reader import ContentStoreReader
    from .writer import ContentStoreWriter

__version__ = "0.1.0"

#: Names that need torch, and the module each lives in (imported on first use).
_LAZY = {
    "ContentStoreReader": ".reader",
    "ContentStoreWriter": ".writer",
    "load_tensor_reader": ".ops",
    "export_safetensors": ".maintenance",
    "import_store": ".maintenance",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


register_when_torch_is_imported()

__all__ = [
    "BlobNotFoundError",
    "ContentStoreReader",
    "ContentStoreWriter",
    "CorruptObjectError",
    "DiffResult",
    "FormatError",
    "InvalidDigestError",
    "InvalidNameError",
    "ReaderContextError",
    "StoreError",
    "StoreIOError",
    "StoreNotFoundError",
    "TensorNotFoundError",
    "TensorRecord",
    "UnsupportedTensorError",
    "VerifyReport",
    "__version__",
    "diff",
    "du",
    "export_safetensors",
    "gc",
    "hash_storage",
    "import_store",
    "load_tensor_reader",
    "ls",
    "rm",
    "show",
    "verify",
]
