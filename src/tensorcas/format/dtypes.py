"""dtypes: a stable string per storable dtype, and the allow-list readers enforce.

Only dtypes with a fixed item size whose bytes are the whole value are storable; quantized dtypes
carry scale and zero-point outside the bytes, so they are not on the list.  The names are the
attribute names in ``torch`` and never change meaning.

The table is static (name: item size, kind) so that reading records, listing and verifying never
import torch; the ``torch.dtype`` objects are looked up on first use (``DTYPES``, ``DTYPE_NAMES``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import FormatError

if TYPE_CHECKING:
    import torch

_DTYPE_INFO: dict[str, tuple[int, str]] = {
    "bool": (1, "bool"),
    "uint8": (1, "int"),
    "int8": (1, "int"),
    "int16": (2, "int"),
    "int32": (4, "int"),
    "int64": (8, "int"),
    "uint16": (2, "int"),
    "uint32": (4, "int"),
    "uint64": (8, "int"),
    "float16": (2, "float"),
    "bfloat16": (2, "float"),
    "float32": (4, "float"),
    "float64": (8, "float"),
    "complex32": (4, "complex"),
    "complex64": (8, "complex"),
    "complex128": (16, "complex"),
    "float8_e4m3fn": (1, "float"),
    "float8_e4m3fnuz": (1, "float"),
    "float8_e5m2": (1, "float"),
    "float8_e5m2fnuz": (1, "float"),
    "float8_e8m0fnu": (1, "float"),
    "float4_e2m1fn_x2": (1, "float"),
}
_DTYPE_NAMES = tuple(_DTYPE_INFO)
_torch_tables: tuple[dict[str, torch.dtype], dict[torch.dtype, str]] | None = None


def tables() -> tuple[dict[str, torch.dtype], dict[torch.dtype, str]]:
    """``DTYPES`` and ``DTYPE_NAMES``, built (importing torch) on first use."""
    global _torch_tables
    if _torch_tables is None:
        import torch

        by_name = {
            name: getattr(torch, name)
            for name in _DTYPE_NAMES
            if isinstance(getattr(torch, name, None), torch.dtype)
        }
        _torch_tables = by_name, {dtype: name for name, dtype in by_name.items()}
    return _torch_tables


def __getattr__(name: str) -> Any:
    # ``DTYPES`` (stable name -> torch.dtype, for the dtypes this torch has) and ``DTYPE_NAMES``
    # (the reverse) are built on first access, so that importing this module does not import torch.
    if name == "DTYPES":
        return tables()[0]
    if name == "DTYPE_NAMES":
        return tables()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_known(dtype_name_: object) -> bool:
    """Whether ``dtype_name_`` is a stored dtype name tensorcas can load."""
    return isinstance(dtype_name_, str) and dtype_name_ in _DTYPE_INFO


def dtype_name(dtype: torch.dtype) -> str | None:
    """The stable name of ``dtype``, or ``None`` if it cannot be stored."""
    return tables()[1].get(dtype)


def torch_dtype(dtype_name_: str) -> torch.dtype:
    """The ``torch.dtype`` of a stored dtype name (imports torch)."""
    found = tables()[0].get(dtype_name_)
    if found is None:
        raise FormatError(
            f"dtype {dtype_name_!r} is not available in this version of torch; upgrade torch to read it"
        )
    return found


def itemsize(dtype_name_: str) -> int:
    """Bytes per element of a stored dtype name (which must be known)."""
    return _DTYPE_INFO[dtype_name_][0]


def is_floating_or_complex(dtype_name_: str) -> bool:
    return _DTYPE_INFO[dtype_name_][1] in ("float", "complex")
