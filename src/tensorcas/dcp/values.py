"""Non-tensor state-dict values as typed JSON, so that a checkpoint never holds a pickle.

DCP pickles every value that is not a tensor (a step count, a learning rate, a data loader's
``BytesIO``); tensorcas keeps them in the manifest instead, in the encoding below, and refuses
at save time what it cannot keep without pickle.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import torch

from .. import format as fmt
from ..errors import CheckpointError
from .checks import Invalid, integers, list_of

#: The deepest nesting of a non-tensor value (lists in dicts in tuples ...).
MAX_VALUE_DEPTH = 64


_TAGS = frozenset(("float", "tuple", "dict", "bytes", "bytearray", "bytesio", "size", "dtype"))


def encode_value(value: Any, fqn: str, _depth: int = 0) -> Any:
    """A JSON-ready encoding of a non-tensor state-dict value.

    ``None``, ``bool``, ``int``, ``str``, finite ``float`` and lists are plain JSON; the rest
    are one-key objects: ``{"float": "nan"}``, ``{"tuple": [...]}``, ``{"dict": [[k, v], ...]}``,
    ``{"bytes": base64}`` (also ``bytearray``, ``bytesio``), ``{"size": [...]}``,
    ``{"dtype": name}``.  Anything else would need pickle, and is refused.
    """
    if _depth > MAX_VALUE_DEPTH:
        raise CheckpointError(f"value of {fqn!r} is nested deeper than {MAX_VALUE_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if type(value) is int:
        return value
    if type(value) is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if type(value) is list:
        return [encode_value(v, fqn, _depth + 1) for v in value]
    if type(value) is torch.Size:
        return {"size": list(value)}
    if type(value) is tuple:
        return {"tuple": [encode_value(v, fqn, _depth + 1) for v in value]}
    if type(value) is dict:
        return {
            "dict": [
                [encode_value(k, fqn, _depth + 1), encode_value(v, fqn, _depth + 1)]
                for k, v in value.items()
            ]
        }
    if type(value) in (bytes, bytearray):
        return {type(value).__name__: base64.b64encode(value).decode("ascii")}
    if isinstance(value, io.BytesIO):
        return {"bytesio": base64.b64encode(value.getvalue()).decode("ascii")}
    if isinstance(value, torch.dtype) and fmt.dtype_name(value) is not None:
        return {"dtype": fmt.dtype_name(value)}
    if isinstance(value, torch.Tensor):
        raise CheckpointError(
            f"value of {fqn!r} holds a tensor inside a {type(value).__name__}; DCP saves such "
            "containers whole (as pickle). Put tensors in dicts or lists so that each is saved as a tensor"
        )
    raise CheckpointError(
        f"value of {fqn!r} is a {type(value).__module__}.{type(value).__qualname__}, which cannot be "
        "kept without pickle; tensorcas keeps None, bool, int, float, str, bytes, BytesIO, "
        "torch.Size, dtypes, and lists, tuples and dicts of these"
    )


def decode_value(raw: Any, what: str, _depth: int = 0) -> Any:
    """The value :func:`encode_value` encoded; raises :class:`Invalid` for anything else."""
    if _depth > MAX_VALUE_DEPTH:
        raise Invalid(f"{what}: value nested deeper than {MAX_VALUE_DEPTH} levels")
    if raw is None or isinstance(raw, (bool, str, int)):
        return raw
    if isinstance(raw, float):
        return raw
    if isinstance(raw, list):
        return [decode_value(v, what, _depth + 1) for v in raw]
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in _TAGS:
        raise Invalid(f"{what}: a value object must have exactly one key of {sorted(_TAGS)}")
    tag, body = next(iter(raw.items()))
    if tag == "float":
        if body not in ("nan", "inf", "-inf"):
            raise Invalid(f"{what}: float {body!r} is not 'nan', 'inf' or '-inf'")
        return float(body)
    if tag == "tuple":
        return tuple(decode_value(v, what, _depth + 1) for v in list_of(body, what))
    if tag == "dict":
        out = {}
        for pair in list_of(body, what):
            if not isinstance(pair, list) or len(pair) != 2:
                raise Invalid(f"{what}: dict items must be [key, value] pairs")
            key = decode_value(pair[0], what, _depth + 1)
            try:
                out[key] = decode_value(pair[1], what, _depth + 1)
            except TypeError:
                raise Invalid(
                    f"{what}: dict key of type {type(key).__name__} cannot be a key"
                ) from None
        return out
    if tag in ("bytes", "bytearray", "bytesio"):
        if not isinstance(body, str):
            raise Invalid(f"{what}: {tag} must be a base64 string")
        try:
            data = base64.b64decode(body.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            raise Invalid(f"{what}: {tag} is not valid base64") from None
        return (
            data if tag == "bytes" else bytearray(data) if tag == "bytearray" else io.BytesIO(data)
        )
    if tag == "size":
        return torch.Size(integers(body, what))
    if not isinstance(body, str) or body not in fmt.DTYPES:
        raise Invalid(f"{what}: dtype {body!r} is not one tensorcas knows")
    return fmt.DTYPES[body]
