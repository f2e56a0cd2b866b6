"""The error hierarchy.

Every failure caused by a store's content, by a name or by the storage under a store derives from
:class:`StoreError`, so ``except tensorcas.StoreError`` is enough for callers that open stores they
do not trust.  Where a built-in exception fits, it is a second parent (``KeyError`` for a missing
tensor, ``ValueError`` for a bad name), so code written against dict-like or stdlib behaviour keeps
working.  Where PyTorch's own ``torch.utils._content_store`` raises ``FileNotFoundError`` (a
missing tensor, storage or store), ours is a ``FileNotFoundError`` too, so PyTorch's tooling that
catches it (the repro scripts' ``InputReader`` falls back to random data) works unchanged.
Messages name the tensor or blob involved and say what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass


class StoreError(Exception):
    """Base class of every error tensorcas raises for a store, its content or its names."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """The location holds no tensorcas store (and the caller did not ask to create one)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "store not found"


class FormatError(StoreError):
    """The store's format marker is missing, malformed, or of a version this release cannot read."""


class InvalidKeyError(FormatError, ValueError):
    """A writer or pack id cannot be part of a key: the format allows only short, lowercase,
    path-safe ids."""


class CorruptObjectError(StoreError):
    """A blob or record is damaged: its bytes, size or content do not match what the store says."""


class TensorNotFoundError(StoreError, KeyError, FileNotFoundError):
    """No tensor of that name is stored (PyTorch's store raises ``FileNotFoundError`` here)."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable.
        return str(self.args[0]) if self.args else "tensor not found"


class BlobNotFoundError(StoreError, KeyError, FileNotFoundError):
    """No blob with that digest is stored (PyTorch's store raises ``FileNotFoundError`` here)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "blob not found"


class BlobLostError(CorruptObjectError, BlobNotFoundError):
    """A blob the store's records say it holds is gone (its file or its pack was deleted).

    Damage, so a :class:`CorruptObjectError`; and missing data, so also a
    :class:`BlobNotFoundError` and a ``FileNotFoundError``, as a missing storage file is for
    PyTorch's store."""


class InvalidNameError(StoreError, ValueError):
    """A tensor name or prefix is empty, too long, or could reach outside the store."""


class InvalidDigestError(StoreError, ValueError):
    """A digest string is not of the form ``blake3:<64 lowercase hex digits>``."""


class UnsupportedTensorError(StoreError, TypeError):
    """The tensor's layout or dtype cannot be stored (sparse, quantized, nested, subclass...)."""


class StoreIOError(StoreError):
    """The operating system failed a read or write; the original ``OSError`` is ``__cause__``.

    The store is left consistent: nothing half-written is published.
    """


class ObjectStoreError(StoreIOError):
    """An object-storage service failed a request, after the client's retries with backoff; the
    client's error is ``__cause__``.  The store is left consistent: an object is published whole
    or not at all."""


class BucketNotFoundError(ObjectStoreError, FileNotFoundError):
    """The bucket a location names does not exist (or the endpoint is not the service meant)."""


class AccessDeniedError(ObjectStoreError, PermissionError):
    """The object store refused the credentials, or they lack a permission the request needs."""


class StoreUnavailableError(ObjectStoreError, ConnectionError):
    """The object store could not be reached, dropped connections, or kept answering 503
    (throttling) or another server error, however often the request was retried."""


class UnsupportedLocationError(StoreError, ValueError):
    """A location has a URL scheme tensorcas does not open (it is never taken for a path), or an
    object-storage location lacks what it needs (a bucket, the obstore package)."""


class ResourceLimitError(StoreError):
    """An object is larger than this process can allocate or map (a record may claim up to
    2**63 bytes, and a sparse file may really be that large); nothing was read."""


class ReaderContextError(StoreError, RuntimeError):
    """``load_tensor`` found a record that does not match the size, stride or device asked for."""


class ReadOnlyStoreError(StoreError, PermissionError):
    """A write was attempted on a store opened read-only (readers, ``verify``, ``du``...)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "store is read-only"


class UnsafeFileError(StoreError):
    """A path inside the store is a symlink or not a regular file; tensorcas never follows those."""


class DamagedStoreError(StoreError):
    """gc refused to run because some log lines cannot be read.

    A record that cannot be read may still reference blobs, which would then look unreferenced and
    be deleted.  Run ``tensorcas verify`` to see the damage; pass ``force=True`` (``--force``) to
    collect anyway, accepting that the damaged records' blobs may be lost.
    """


class ExportError(StoreError):
    """A tensor cannot be written to the export format, or the output cannot be created."""


class ImportSourceError(StoreError):
    """The source to import is not a safetensors file or a PyTorch content-store directory, or
    one of its files is damaged or unsafe."""


@dataclass(frozen=True)
class Finding:
    """Damage found and reported rather than raised: by the store while it reads logs (a line it
    cannot read, a torn tail), and by ``verify`` for every blob and record it checks.

    ``kind`` is a stable word for scripts (damaged-blob, missing-blob, wrong-size, damaged-record,
    unreadable, torn-tail); ``message`` says it for people, starting with where it was found.
    """

    kind: str
    message: str
    blob: str | None = None
    names: tuple[str, ...] = ()
    severity: str = "error"  # or "warning" (an interrupted write's torn tail)
    #: Damaged lines this finding stands for: 1, or for a log's summary the lines not listed.
    count: int = 1


class RecordingError(StoreError, ValueError):
    """A recording cannot be made or read as asked: a bad option, an index that does not parse,
    a graph that cannot be turned into a script."""


class PlotUnavailableError(StoreError, ImportError):
    """A plot was asked for but matplotlib is not installed (``pip install 'tensorcas[plot]'``)."""


class CheckpointError(StoreError):
    """A checkpoint cannot be saved or loaded as asked (see ``tensorcas.dcp``): a value that cannot
    be kept without pickle, a name already taken, a manifest that fails validation."""


class CheckpointNotFoundError(CheckpointError, KeyError, FileNotFoundError):
    """No complete checkpoint of that name is in the store (a save that never finished is not
    one)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "checkpoint not found"
