"""``ls``: the current tensors of a store, in the order they were written.

A thin layer over ``Store.records`` so that the command line and scripts get the same answer,
with each record's logical size (the bytes its own elements cover) beside its blob's size.
"""

from __future__ import annotations

from .. import format as fmt
from ..store import Location, Store
from ._common import open_store


def ls(loc: Location | Store, prefix: str = "") -> list[fmt.TensorRecord]:
    """Records of the tensors under ``prefix`` (``''`` for all), oldest write first.

    ``prefix`` selects a name and everything below it as a directory: ``'model'`` matches
    ``model`` and ``model/w`` but not ``model2``; ``'model/'`` matches only names below it.
    Read-only.
    """
    store = open_store(loc, read_only=True)
    return store.records(prefix)


def list_roots(loc: Location | Store) -> list[fmt.RootEntry]:
    """The storage roots of a store (blobs written with ``write_storage``, kept by gc without a
    name until removed with ``rm --root``), oldest first.  Read-only."""
    store = open_store(loc, read_only=True)
    return list(store.roots().values())
