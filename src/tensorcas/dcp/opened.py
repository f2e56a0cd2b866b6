"""Stores, and their writers, kept open between the saves and loads of one process.

Opening a store reads every log in it, and a store holding many checkpoints has many logs: a
training job that saves every few minutes would read its whole history on every save (on object
storage, a request per log), and so would an evaluation job on every load.  A store opened by a
save is kept open here instead, and the next save of the process brings it up to date by reading
only what was appended since (by itself, other ranks, or any other writer), as a long-lived
writer does.  Loads (and listing checkpoints) keep a store of their own, opened read-only as
every reader's is.

A kept store is used again only while it is the same store: its marker is the same file (a
local store; an inode number alone may be used again) or an object of the same size and time
(object storage), and no log it has read has vanished since (a store removed and made again at
the same place is opened afresh).  At most :data:`KEEP` stores are kept, the least recently used
is dropped first, and a forked child starts with none.  ``memory://`` (a new store at each
opening) and backends given as objects are never kept.

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


#: Which marker a store has: a local file (device, inode, ctime) or an object (size, mtime).
Identity = tuple[float, ...]


class _Kept:
    """A store kept open, and the writers on it that no save is using now."""

    def __init__(self, key: str, identity: Identity, store: Store) -> None:
        self.key = key
        self.identity = identity
        self.store = store
        self.idle: list[ContentStoreWriter] = []

    def take_idle(self) -> list[ContentStoreWriter]:
        """Its idle writers, for the caller to close (under ``_lock``, as the store is dropped:
        a save that found this store a moment ago must not take one that is being closed)."""
        idle, self.idle = self.idle, []
        return idle


_kept: OrderedDict[tuple[str, bool, bool], _Kept] = OrderedDict()
_lock = threading.Lock()


def _close_quietly(writer: ContentStoreWriter) -> None:
    try:
        writer.close()
    except Exception:
        pass  # its records are all appended; closing only seals its pack


def _identity(key: str, store: Store | None) -> Identity | None:
    """Which marker the store at ``key`` has now; ``None`` if it has none."""
    if "://" not in key:
        try:
            st = os.stat(os.path.join(key, *fmt.META_KEY.split("/")))
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_ctime_ns)
    assert store is not None
    info = store.backend.stat(fmt.META_KEY)
    return None if info is None else (info.size, info.mtime)


def _key(loc: Location) -> str | None:
    """What a store is kept under: a local directory's absolute path, or an object-storage URL;
    ``None`` where a store is not kept."""
    if not isinstance(loc, (str, os.PathLike)):
        return None
    path = os.fspath(loc)
    if not isinstance(path, str) or path.startswith("memory://"):
        return None
    return path if "://" in path else os.path.abspath(path)


def open_store(loc: Location, *, durable: bool = False, read_only: bool = False) -> Store:
    """The store at ``loc``: one kept open by an earlier save or load of this process while it
    is still the same store (see the module's docstring), else a newly opened one (kept for the
    next).  A store to write to is created if missing; ``read_only`` (a load) raises
    ``StoreNotFoundError`` instead, and its store is one of its own, wrapped read-only, as every
    reader's is."""
    return _open(loc, durable, read_only)[0]


def _open(loc: Location, durable: bool, read_only: bool = False) -> tuple[Store, _Kept | None]:
    key = _key(loc)
    if key is None:
        return Store.open(loc, create=not read_only, durable=durable, read_only=read_only), None
    kept_key = (key, durable, read_only)
    with _lock:
        kept = _kept.get(kept_key)
    if kept is not None and not kept.store.log.lost_logs and kept.identity == _identity(key, kept.store):
        with _lock:
            if _kept.get(kept_key) is kept:
                _kept.move_to_end(kept_key)
                # Created by an earlier save perhaps, but not empty any more: a writer on it
                # must learn from its index what is stored (``Placement.read_index_once``).
                kept.store.created = False
                return kept.store, kept
    store = Store.open(loc, create=not read_only, durable=durable, read_only=read_only)
    identity = _identity(key, store)
    if identity is None or ("://" not in key and store.location != key):
        return store, None
    fresh = _Kept(key, identity, store)
    dropped: list[ContentStoreWriter] = []
    with _lock:
        old = _kept.get(kept_key)
        if old is not None:
            dropped += old.take_idle()
        _kept[kept_key] = fresh
        _kept.move_to_end(kept_key)
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
    """Keep ``writer`` (of a save that finished) for the next save on its store, its packs
    sealed (so that gc may rewrite them meanwhile); or close it where its store is no longer
    kept, or is on object storage: there a log is a chain of segments, one per append, that
    readers list and read one by one until its writer closes it into one object."""
    with _lock:
        kept = next((k for k in _kept.values() if k.store is writer.store), None)
    if kept is None or "://" in kept.key:
        _close_quietly(writer)
        return
    try:
        writer.seal_packs()
    except Exception:
        _close_quietly(writer)
        return
    with _lock:
        if any(k is kept for k in _kept.values()):
            kept.idle.append(writer)
            return
    _close_quietly(writer)


def forget(loc: Location | None = None) -> None:
    """Drop every kept store (or only the one of ``loc``) and close the writers kept with it:
    the next save opens the store afresh."""
    key = None if loc is None else _key(loc)
    with _lock:
        chosen = [k for k in _kept if loc is None or k[0] == key]
        dropped = [writer for k in chosen for writer in _kept.pop(k).take_idle()]
    for writer in dropped:
        _close_quietly(writer)


def _forget_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _kept.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
