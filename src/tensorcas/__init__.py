"""tensorcas: a content-addressed store for PyTorch tensors.

Storages are stored once under the BLAKE3 digest of their bytes; tensors are named records
(dtype, shape, stride, offset) that point at them.  Nothing is ever unpickled, and everything read
from a store is validated, so stores from strangers are safe to open.

Importing the package registers ``torch.ops.tensorcas.load_tensor``.
"""

from .dcp import load_state_dict, save_state_dict
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
    StoreError,
    StoreIOError,
    StoreNotFoundError,
    TensorNotFoundError,
    UnsafeFileError,
    UnsupportedTensorError,
)
from .format import TensorRecord
from .hashing import hash_storage
from .maintenance import (
    DiffResult,
    VerifyReport,
    diff,
    du,
    export_safetensors,
    gc,
    import_store,
    ls,
    rm,
    show,
    verify,
)
from .maintenance.bisect import BisectResult, bisect
from .ops import load_tensor_reader
from .reader import ContentStoreReader
from .recording import Recorder, RecordingBackend, make_repro, record, recording_backend
from .writer import ContentStoreWriter

__version__ = "0.1.0"

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
