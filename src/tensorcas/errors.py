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


class StoreError(Exception):
    """Base class of every error tensorcas raises for a store, its content or its names."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """The location holds no tensorcas store (and the caller did not ask to create one)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "store not found"


class FormatError(StoreError):
    """The store's format marker is missing, malformed, or of a version this release cannot read."""


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


class ReaderContextError(StoreError, RuntimeError):
    """``load_tensor`` found a record that does not match the size, stride or device asked for."""


class CheckpointError(StoreError):
    """A checkpoint cannot be saved or loaded as asked (see ``tensorcas.dcp``): a value that cannot
    be kept without pickle, a name already taken, a manifest that fails validation."""


class CheckpointNotFoundError(CheckpointError, KeyError, FileNotFoundError):
    """No complete checkpoint of that name is in the store (a save that never finished is not
    one)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "checkpoint not found"
