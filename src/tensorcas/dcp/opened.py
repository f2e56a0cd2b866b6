"""Stores kept open between the saves of one process.

Opening a store reads every log in it, and a store holding many checkpoints has many logs (one
per rank and save): a training job that saves every few minutes would read its whole history on
every save.  A local store opened by a save is kept open here instead, and the next save of the
process brings it up to date by reading only what was appended since (by itself, other ranks,
or any other writer), as a long-lived writer does.

A kept store is used again only while its marker file is the same file (a store removed and made
again at the same path is opened afresh).  At most :data:`KEEP` stores are kept, the least
recently used is dropped first, and a forked child starts with none.

Writers are kept too (:func:`take_writer`, :func:`give_back`): a save that finished gives its
writer back, and the next save of the process appends to the same log.  A training job that
saves every few minutes then adds one log per process, not one per save, so the logs a store
lists and reads stay few however many checkpoints it holds; and the writer's hints (which
storages it saw stored) serve the next save.  A save takes a writer no other save is using, and
a writer of a save that failed is closed, never kept.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from .. import format as fmt
from ..store import Location, Store
from ..writer import ContentStoreWriter

#: How many stores a process keeps open.
KEEP = 4

class _Kept:
    """A store kept open, and the writers on it that no save is using now."""

    def __init__(self, identity: tuple[int, int, int], store: Store) -> None:
        self.identity = identity
        self.store = store
        self.idle: list[ContentStoreWriter] = []

    def take_idle(self) -> list[ContentStoreWriter]:
        """Its idle writers, for the caller to close (under ``_lock``, as the store is dropped:
        a save that found this store a moment ago must not take one that is being closed)."""
        idle, self.idle = self.idle, []
        return idle


_kept: OrderedDict[tuple[str, bool], _Kept] = OrderedDict()
_lock = threading.Lock()


def _close_quietly(writer: ContentStoreWriter) -> None:
    try:
        writer.close()
    except Exception:
        pass  # its records are all appended; closing only seals its pack


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
    return _open(loc, durable)[0]


def _open(loc: Location, durable: bool) -> tuple[Store, _Kept | None]:
    root = _local_root(loc)
    if root is None:
        return Store.open(loc, create=True, durable=durable), None
    key = (root, durable)
    with _lock:
        kept = _kept.get(key)
        if kept is not None and kept.identity == _marker_identity(root):
            _kept.move_to_end(key)
            return kept.store, kept
    store = Store.open(loc, create=True, durable=durable)
    identity = _marker_identity(root)
    if identity is None or store.location != root:
        return store, None
    fresh = _Kept(identity, store)
    dropped: list[ContentStoreWriter] = []
    with _lock:
        old = _kept.get(key)
        if old is not None:
            dropped += old.take_idle()
        _kept[key] = fresh
        _kept.move_to_end(key)
        while len(_kept) > KEEP:
            dropped += _kept.popitem(last=False)[1].take_idle()
    for writer in dropped:
        _close_quietly(writer)
    return store, fresh


def take_writer(loc: Location) -> ContentStoreWriter:
    """A writer for one save on the store at ``loc``: one an earlier save of this process gave
    back (its log goes on), else a new one.  Give it back with :func:`give_back` once the save
    is done; close it instead if the save failed."""
    store, kept = _open(loc, False)
    if kept is not None:
        with _lock:
            if kept.idle:
                return kept.idle.pop()
    return ContentStoreWriter.sharing(store)


def give_back(writer: ContentStoreWriter) -> None:
    """Keep ``writer`` (of a save that finished) for the next save on its store, or close it
    where its store is no longer kept."""
    with _lock:
        for kept in _kept.values():
            if kept.store is writer.store:
                kept.idle.append(writer)
                return
    _close_quietly(writer)


def forget() -> None:
    """Drop every kept store and close the writers kept with them (the next save opens its
    store afresh)."""
    with _lock:
        dropped = [writer for kept in _kept.values() for writer in kept.take_idle()]
        _kept.clear()
    for writer in dropped:
        _close_quietly(writer)


def _forget_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _kept.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
