"""Tensor names and prefixes: what a valid name is, and which names a prefix selects.

Names never become file paths, but they are still held to rules that keep them portable and
unambiguous, so that a store written on one machine means the same on another.
"""

from __future__ import annotations

import re

from ..errors import InvalidNameError

MAX_NAME_BYTES = 4096

_BAD_CHAR_RE = re.compile(r"[\x00-\x1f\x7f\\]")
#: An empty, ``.`` or ``..`` component (also a leading or trailing ``/``).
BAD_COMPONENT_RE = re.compile(r"(?:^|/)\.{0,2}(?:/|$)")


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid tensor name, else raise :class:`InvalidNameError`.

    Names are ``/``-separated paths of non-empty components (``model/layer.0/weight``): no empty
    component, no ``.`` or ``..``, no leading or trailing ``/``, no backslash, no NUL or other
    control character, at most 4096 bytes of UTF-8.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"tensor name must be a str, not {type(name).__name__}: {name!r}")
    if not name:
        raise InvalidNameError("tensor name is empty; use a non-empty name such as 'model/weight'")
    _check_path_like(name, "tensor name")
    return name


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it can select names (``''``, ``'model'`` or ``'model/'``)."""
    if not isinstance(prefix, str):
        raise InvalidNameError(f"prefix must be a str, not {type(prefix).__name__}: {prefix!r}")
    if prefix:
        _check_path_like(prefix[:-1] if prefix.endswith("/") else prefix, "prefix")
    return prefix


def _check_path_like(name: str, what: str) -> None:
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidNameError(f"{what} {name!r} is not valid UTF-8: {exc.reason}") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidNameError(f"{what} {name[:60]!r}... is {len(encoded)} bytes; the limit is {MAX_NAME_BYTES}")
    bad = _BAD_CHAR_RE.search(name)
    if bad is not None:
        raise InvalidNameError(
            f"{what} {name!r} contains {bad.group()!r}; names may not hold backslashes or control characters"
        )
    if BAD_COMPONENT_RE.search(name):
        raise InvalidNameError(
            f"{what} {name!r} has an empty, '.' or '..' component; "
            "use '/'-separated non-empty parts such as 'model/layer.0/weight'"
        )


def name_matches(name: str, prefix: str) -> bool:
    """Whether ``name`` lies under ``prefix``: the name itself, or below it as a directory."""
    if not prefix:
        return True
    if prefix.endswith("/"):
        return name.startswith(prefix)
    return name == prefix or name.startswith(prefix + "/")
