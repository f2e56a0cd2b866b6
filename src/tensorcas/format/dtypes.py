"""dtypes: a stable string per storable dtype, and the allow-list readers enforce.

Only dtypes with a fixed item size whose bytes are the whole value are storable; quantized dtypes
carry scale and zero-point outside the bytes, so they are not on the list.  The names are the
attribute names in ``torch`` and never change meaning.
"""

from __future__ import annotations

import torch

_DTYPE_NAMES = (
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex32",
    "complex64",
    "complex128",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
)

#: Stored name -> dtype, for the dtypes this torch build has.
DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, name) for name in _DTYPE_NAMES if isinstance(getattr(torch, name, None), torch.dtype)
}
#: dtype -> stored name.
DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}


def dtype_name(dtype: torch.dtype) -> str | None:
    """The stable name of ``dtype``, or ``None`` if it cannot be stored."""
    return DTYPE_NAMES.get(dtype)


def itemsize(dtype_name_: str) -> int:
    """Bytes per element of a stored dtype name (which must be in :data:`DTYPES`)."""
    return DTYPES[dtype_name_].itemsize
