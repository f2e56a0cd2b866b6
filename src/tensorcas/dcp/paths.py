"""Rebuilding a nested state dict from DCP's flattened keys and their paths."""

from __future__ import annotations

import itertools
from typing import Any

from .checks import Invalid

#: One element of a path into a nested state dict: a dict key or a list index.
PathElement = str | int


def unflatten(flat: dict[str, Any], paths: dict[str, tuple[PathElement, ...]]) -> dict[str, Any]:
    """Put each value back where DCP found it: ``("optim", "param_groups", 0, "lr")`` is
    ``out["optim"]["param_groups"][0]["lr"]``.  Lists are padded with ``None`` as DCP does; the
    padding is bounded, so a hostile path cannot make a list of a billion entries.  Raises
    :class:`Invalid` if two paths clash (one inside the other)."""
    builder = _Builder(2 * len(flat) + 1024)
    for fqn, value in flat.items():
        builder.put(paths[fqn], value, fqn)
    return builder.root


class _Builder:
    def __init__(self, padding: int) -> None:
        self.root: dict[str, Any] = {}
        self.padding = padding  # how many list slots may still be made up

    def put(self, path: tuple[PathElement, ...], value: Any, fqn: str) -> None:
        node: Any = self.root
        for key, next_key in itertools.pairwise(path):
            empty: Any = [] if isinstance(next_key, int) else {}
            self._slot(node, key, fqn)
            child = node.setdefault(key, empty) if isinstance(node, dict) else node[key]
            if child is None:
                child = node[key] = empty
            if type(child) is not type(empty):
                raise _bad_path(fqn)
            node = child
        key = path[-1]
        self._slot(node, key, fqn)
        if (node.get(key) if isinstance(node, dict) else node[key]) is not None:
            raise _bad_path(fqn)
        node[key] = value

    def _slot(self, node: Any, key: PathElement, fqn: str) -> None:
        """Check that ``key`` fits ``node`` (a str for a dict, an index for a list), growing a
        list to hold the index."""
        if isinstance(node, dict) and isinstance(key, str):
            return
        if not (isinstance(node, list) and isinstance(key, int)):
            raise _bad_path(fqn)
        missing = key + 1 - len(node)
        if missing > 0:
            if missing > self.padding:
                raise Invalid(
                    f"the path of {fqn!r} has a list index ({key}) far beyond the entries saved"
                )
            node.extend([None] * missing)
            self.padding -= missing


def _bad_path(fqn: str) -> Invalid:
    return Invalid(f"the path of {fqn!r} clashes with another key's (one is inside the other)")
