"""Strict JSON, the one syntax of every metadata object a store holds.

Readers accept only what the writers produce and what a plain JSON parser would read the same way:
UTF-8, no NaN or Infinity, no duplicate keys (which parsers resolve differently), no nesting deep
enough to exhaust the stack.  Writers emit compact ASCII.
"""

from __future__ import annotations

import json
from typing import Any

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)

#: A JSON string literal in the writers' form (ASCII, escapes as ``json.dumps`` writes them).
json_str = json.encoder.encode_basestring_ascii


def dumps(obj: dict[str, Any]) -> bytes:
    """Compact ASCII JSON of ``obj``, keys in insertion order."""
    return _ENCODER.encode(obj).encode("ascii")


def _reject_constant(value: str) -> Any:
    raise ValueError(f"non-standard JSON constant {value}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {duplicate!r}")
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def loads(data: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, no duplicate keys, no deep nesting.

    Raises ``ValueError`` with a short reason for anything else.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc.reason}") from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
