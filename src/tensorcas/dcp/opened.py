"""Stores kept open between the saves of one process.

Opening a store reads every log in it, and a store holding many checkpoints has many logs (one
per rank and save): a training job that saves every few minutes would read its whole history on
every save.  A local store opened by a save is kept open here instead, and the next save of the
process brings it up to date by reading only what was appended since (by itself, other ranks,
or any other writer), as a long-lived writer does.

A kept store is used again only while its marker file is the same file (a store removed and made
again at the same path is opened afresh).  At most :data:`KEEP` stores are kept, the least
recently used is dropped first, and a forked child starts with none.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from .. import format as fmt
from ..store import Location, Store

#: How many stores a process keeps open.
KEEP = 4

_kept: OrderedDict[tuple[str, bool], tuple[tuple[int, int, int], Store]] = OrderedDict()
_lock = threading.Lock()


def _marker_identity(root: str) -> tuple[int, int, int] | None:
    """Which file the store's marker is (an inode number alone may be used again)."""
    try:
        st = os.stat(os.path.join(root, *fmt.META_KEY.split("/")))
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def _local_root(loc: Location) -> str | None:
    """The directory of a store given as a local path; ``None`` for anything else."""
    if not isinstance(loc, (str, os.PathLike)):
        return None
    path = os.fspath(loc)
    if not isinstance(path, str) or "://" in path:
        return None
    return os.path.abspath(path)


def open_store(loc: Location, *, durable: bool = False) -> Store:
    """The store at ``loc`` (created if missing): one kept open by an earlier save of this
    process when ``loc`` is a local directory and its marker is still the same file, else a
    newly opened one (kept for the next save, where ``loc`` is local)."""
    root = _local_root(loc)
    if root is None:
        return Store.open(loc, create=True, durable=durable)
    key = (root, durable)
    with _lock:
        kept = _kept.get(key)
        if kept is not None and kept[0] == _marker_identity(root):
            _kept.move_to_end(key)
            return kept[1]
    store = Store.open(loc, create=True, durable=durable)
    identity = _marker_identity(root)
    if identity is not None and store.location == root:
        with _lock:
            _kept[key] = (identity, store)
            _kept.move_to_end(key)
            while len(_kept) > KEEP:
                _kept.popitem(last=False)
    return store


def forget() -> None:
    """Drop every kept store (the next save opens its store afresh)."""
    with _lock:
        _kept.clear()


def _forget_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _kept.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
