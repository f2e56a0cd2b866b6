"""Handing a response's buffer to the caller instead of copying it.

obstore collects the body of a ``GET`` into a buffer of its own (``obstore.Bytes``) and exports it
read-only, since its API treats every buffer as immutable.  The body of an HTTP response is
collected into memory made for that response alone: nothing else in the client refers to it once
it is returned, so the caller may own it, and write to it, as it owns memory it allocated.
:func:`owned_view` gives such a buffer as a writable byte view that keeps it alive.  Only buffers
known to be the client's fresh copy of a response may be handed over this way: an in-memory
store's ``get`` returns the stored bytes themselves, which a write would change.
"""

from __future__ import annotations

import ctypes
from typing import Any

#: The alignment a view needs to be handed over: the largest of any dtype's (complex128).  A
#: buffer that starts elsewhere is copied instead.
ALIGNMENT = 16


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer`` (the same layout on every version this package supports)."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


# Function objects of this module's own (indexing makes a new one; attribute access would give
# the one ``ctypes.pythonapi`` shares with every library, whose argument types are not ours to set).
_get_buffer = ctypes.pythonapi["PyObject_GetBuffer"]
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi["PyBuffer_Release"]
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None
_PYBUF_SIMPLE = 0


def owned_view(data: Any) -> memoryview | None:
    """A writable byte view of the contiguous buffer ``data`` exports, which holds a reference to
    ``data`` for as long as the view (or anything made over it, a torch storage) lives; ``None``
    if the buffer is empty or not aligned for every dtype.  ``data`` must be memory no one else
    uses (see the module's docstring)."""
    view = _PyBuffer()
    if _get_buffer(data, ctypes.byref(view), _PYBUF_SIMPLE) != 0:  # pragma: no cover - raises
        return None
    address, nbytes = view.buf, view.len
    _release_buffer(ctypes.byref(view))
    if not address or nbytes <= 0 or address % ALIGNMENT:
        return None
    array = (ctypes.c_ubyte * nbytes).from_address(address)
    array._owner = data  # the memory lives as long as the view
    return memoryview(array).cast("B")
