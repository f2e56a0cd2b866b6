"""Making a rank's part of a save durable on a local filesystem: one ``syncfs(2)`` at the end,
with the writing-back started while the rank still writes.

An fsync per blob, record and directory (a rank writes hundreds) costs far more than one
``syncfs`` of the store's filesystem; and since it runs before the rank reports its results, it
runs before the manifest can be published.  Left alone, the kernel starts writing dirty pages
back only once they are many or old (seconds), so the final ``syncfs`` would wait for the whole
save to reach the disk after the last byte was written.  :class:`EarlyWriteback` calls
``syncfs`` over and over on a thread of its own while the rank writes, so that the disk works
while the rank does: the final call then waits only for the last few blobs.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from types import TracebackType
from typing import Any

from .. import format as fmt
from ..errors import StoreIOError
from ..writer import ContentStoreWriter

#: After a ``syncfs`` that found little to do, the writing-back thread waits this long (seconds)
#: before the next, so that it does not spin while the rank hashes bytes that are stored already.
IDLE_WAIT_S = 0.01
#: A ``syncfs`` shorter than this (seconds) found little to do.
IDLE_SYNC_S = 0.002


def _local_file(writer: ContentStoreWriter) -> str | None:
    """A file of the store on the local filesystem (its marker), if the store is local."""
    local_path = getattr(writer.store.backend, "local_path", None)
    return local_path(fmt.META_KEY) if local_path is not None else None


def _syncfs() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    return getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)


def can_sync_filesystem(writer: ContentStoreWriter) -> bool:
    """Whether the store is on a local filesystem that ``syncfs(2)`` can make durable."""
    return _syncfs() is not None and _local_file(writer) is not None


def sync_filesystem(writer: ContentStoreWriter) -> None:
    """Make everything written to the store's filesystem durable with one ``syncfs(2)``."""
    path = _local_file(writer)
    assert path is not None
    fd = os.open(path, os.O_RDONLY)
    try:
        if _syncfs()(fd) != 0:
            err = ctypes.get_errno()
            raise StoreIOError(
                f"syncfs of the store {writer.location} failed: {os.strerror(err)}; the save is not durable"
            )
    finally:
        os.close(fd)


class EarlyWriteback:
    """While in use, a thread writes back what the rank has written so far (``syncfs`` after
    ``syncfs``).  Only a head start: its errors are ignored, since the final
    :func:`sync_filesystem` is the one that makes the save durable and reports failure."""

    def __init__(self, writer: ContentStoreWriter) -> None:
        self._path = _local_file(writer)
        assert self._path is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tensorcas-writeback", daemon=True)

    def __enter__(self) -> EarlyWriteback:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        syncfs = _syncfs()
        assert self._path is not None
        try:
            fd = os.open(self._path, os.O_RDONLY)
        except OSError:
            return
        try:
            while not self._stop.is_set():
                start = time.monotonic()
                if syncfs(fd) != 0:
                    return
                if time.monotonic() - start < IDLE_SYNC_S:
                    self._stop.wait(IDLE_WAIT_S)
        finally:
            os.close(fd)
