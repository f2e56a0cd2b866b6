"""Tensor records: what a name stands for, and the checks that make a record safe to use.

A record is a view (dtype, shape, stride, offset in elements) of one blob.  Everything in a record
read from a store is hostile until :func:`validate_record` has checked each field's exact type
(a ``bool`` is not an ``int``), its range, and the view's bounds against the blob's size, in Python
integers so that nothing overflows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from ..errors import CorruptObjectError, UnsupportedTensorError
from .dtypes import is_floating_or_complex, is_known, itemsize, tables, torch_dtype
from .layout import DIGEST_RE
from .names import validate_name

if TYPE_CHECKING:
    import torch

MAX_NDIM = 64
MAX_INT = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class TensorRecord:
    """What a name stands for: a view of one blob.

    ``nbytes`` is the size of the whole blob (the storage), as stored in the log; the bytes the
    view's own elements cover are :attr:`view_nbytes`.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    requires_grad: bool
    blob: str
    nbytes: int

    @property
    def blob_nbytes(self) -> int:
        """The blob's size in bytes (the field ``nbytes``, under a name that says so)."""
        return self.nbytes

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def view_nbytes(self) -> int:
        """Bytes the tensor's own elements cover (its logical size)."""
        return self.numel * itemsize(self.dtype)


_NEW = object.__new__
_SET_FIELDS = tuple(TensorRecord.__dict__[f].__set__ for f in TensorRecord.__slots__)


def parsed_record(
    name: str,
    dtype: str,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
    offset: int,
    requires_grad: bool,
    blob: str,
    nbytes: int,
) -> TensorRecord:
    """``TensorRecord(...)`` for a store of many small tensors: the same record, without the
    frozen dataclass's ``__init__`` (an ``object.__setattr__`` call per field), which costs as
    much as parsing the line.  The fields go through each slot's own setter."""
    record = _NEW(TensorRecord)
    s_name, s_dtype, s_shape, s_stride, s_offset, s_grad, s_blob, s_nbytes = _SET_FIELDS
    s_name(record, name)
    s_dtype(record, dtype)
    s_shape(record, shape)
    s_stride(record, stride)
    s_offset(record, offset)
    s_grad(record, requires_grad)
    s_blob(record, blob)
    s_nbytes(record, nbytes)
    return record


def required_nbytes(dtype: str, shape: tuple[int, ...], stride: tuple[int, ...], offset: int) -> int:
    """The smallest blob size (bytes) that holds every element of the view."""
    size = itemsize(dtype)
    if 0 in shape:
        return offset * size
    last = offset
    for s, st in zip(shape, stride):
        last += (s - 1) * st
    return (last + 1) * size


def make_record(
    name: str,
    dtype: torch.dtype,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
    offset: int,
    requires_grad: bool,
    blob: str,
    nbytes: int,
) -> TensorRecord:
    """A record for a tensor being written: torch guarantees the field types and bounds, and the
    name was validated by the caller, so only the view's bounds are checked again (cheaply)."""
    record = TensorRecord(
        name=name,
        dtype=tables()[1][dtype],
        shape=tuple(shape),
        stride=tuple(stride),
        offset=offset,
        requires_grad=requires_grad,
        blob=blob,
        nbytes=nbytes,
    )
    if required_nbytes(record.dtype, record.shape, record.stride, offset) > nbytes:
        raise UnsupportedTensorError(
            f"tensor {name!r}: its view reaches past the end of its storage; store a .clone() of it"
        )
    return record


def validate_record(record: TensorRecord, *, check_name: bool = True) -> None:
    """Check every field's type and range, and the view's bounds against ``record.nbytes``;
    raise :class:`CorruptObjectError` for the first thing wrong."""
    # Opening a store of small tensors validates one record per tensor read: the checks run in
    # the order of the cheapest first, and the message is made only for a record that fails.
    if check_name:
        validate_name(record.name)
    dtype, shape, stride = record.dtype, record.shape, record.stride
    if not is_known(dtype):
        _bad(record, f"dtype {dtype!r} is not one tensorcas can load")
    _check_ints(record, "shape", shape)
    _check_ints(record, "stride", stride)
    if len(shape) != len(stride):
        _bad(record, f"shape {shape} and stride {stride} differ in length")
    offset, nbytes = record.offset, record.nbytes
    if type(offset) is not int or offset < 0 or offset > MAX_INT:
        _bad(record, f"offset is {offset!r}; expected an integer in [0, 2**63)")
    if type(nbytes) is not int or nbytes < 0 or nbytes > MAX_INT:
        _bad(record, f"nbytes is {nbytes!r}; expected an integer in [0, 2**63)")
    if type(record.requires_grad) is not bool:
        _bad(record, f"requires_grad is {record.requires_grad!r}; expected true or false")
    if record.requires_grad and not is_floating_or_complex(dtype):
        _bad(record, f"requires_grad is set on a {dtype} tensor")
    if not isinstance(record.blob, str) or not DIGEST_RE.match(record.blob):
        _bad(record, f"blob {record.blob!r} is not a blake3 digest")
    # The product of the non-zero sizes, not only the element count: torch multiplies every size
    # with an overflow check, so an empty shape such as [2**31, 2**62, 0] cannot be made either.
    product = 1
    for s in shape:
        product *= s or 1
    if product > MAX_INT:
        _bad(record, f"shape {shape} has more than 2**63 elements (or would)")
    need = required_nbytes(dtype, shape, stride, offset)
    if need > nbytes:
        _bad(
            record,
            f"the view (shape {shape}, stride {stride}, offset {offset}) "
            f"needs {need} bytes but blob {record.blob} has {nbytes}",
        )


def _check_ints(record: TensorRecord, field: str, value: object) -> None:
    if not isinstance(value, tuple) or len(value) > MAX_NDIM:
        _bad(record, f"{field} must be a list of at most {MAX_NDIM} integers")
    for v in value:
        if type(v) is not int or v < 0 or v > MAX_INT:
            _bad(record, f"{field} holds {v!r}; expected integers in [0, 2**63)")


def _bad(record: TensorRecord, what: str) -> NoReturn:
    raise CorruptObjectError(f"record of tensor {record.name!r}: {what}")
