"""The files under a local store: safe opening flags, staged files published by link, appenders,
and errors turned into :class:`StoreIOError` (the pieces ``LocalBackend`` is built of)."""

from __future__ import annotations

import errno
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import StoreError, StoreIOError
from .base import Appender, Staged

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".gc-"
# O_NONBLOCK: opening a FIFO planted in a store must not wait for a writer (it is then refused as
# not a regular file); on regular files the flag changes nothing.
O_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


@contextmanager
def os_errors(action: str, path: str) -> Iterator[None]:
    """Turn an ``OSError`` into a :class:`StoreIOError` that says what failed where."""
    try:
        yield
    except StoreError:
        raise
    except OSError as exc:
        raise StoreIOError(f"{action} {path} failed: {exc.strerror or exc}") from exc


#: Reads of packs up to this size use a kept-open descriptor (larger ones are clamped to the
#: file's size first, so that a damaged length cannot allocate without bound).
SMALL_READ = 1 << 20
MAX_PACK_FDS = 64


def close_all(fds: OrderedDict[str, int], lock: threading.Lock) -> None:
    with lock:
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        fds.clear()


class LocalStaged(Staged):
    """A temporary file in the target directory, linked to its final name when published."""

    def __init__(self, path: Callable[[str], str], makedirs: Callable[[str], None], durable: bool, directory: str) -> None:
        self._path = path
        self._makedirs = makedirs
        self._durable = durable
        self._dir = path(directory)
        self._tmp = os.path.join(self._dir, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        self._written = 0
        with os_errors("creating a temporary file in", self._dir):
            self._fd: int | None = os.open(self._tmp, O_CREATE, 0o444)

    def write(self, data: memoryview | bytes) -> None:
        if self._fd is None:
            raise StoreError("write to a staged blob after it was published or aborted")
        view = memoryview(data).cast("B")
        with os_errors("writing", self._tmp):
            while view:
                n = os.write(self._fd, view[: 1 << 30])
                if n <= 0:
                    raise OSError(errno.EIO, "short write")
                self._written += n
                view = view[n:]

    def publish(self, key: str, *, overwrite: bool = False) -> bool:
        if self._fd is None:
            raise StoreError("publish of a staged blob after it was published or aborted")
        final = self._path(key)
        with os_errors("publishing", final):
            self._makedirs(key.rpartition("/")[0])
            if self._durable:
                os.fsync(self._fd)
            size = os.fstat(self._fd).st_size
            if size != self._written:
                raise OSError(errno.EIO, f"temporary file holds {size} bytes, {self._written} were written")
            os.close(self._fd)
            self._fd = None
            if overwrite:
                os.replace(self._tmp, final)
                published = True
            else:
                try:
                    os.link(self._tmp, final)
                    published = True
                except FileExistsError:
                    published = False
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                        raise
                    published = _rename_if_absent(self._tmp, final)
            if published and self._durable:
                fsync_dir(os.path.dirname(final))
        self.abort()
        return published

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass
        except OSError:
            pass  # a leftover temporary is harmless: gc removes it after its grace period


def _rename_if_absent(tmp: str, final: str) -> bool:
    """Publish on filesystems without hard links; a concurrent identical blob may be replaced by
    identical bytes, which is harmless for content-addressed data."""
    if os.path.lexists(final):
        return False
    os.rename(tmp, final)
    return True


class LocalAppender(Appender):
    def __init__(self, fd: int, path: str, durable: bool) -> None:
        self._fd: int | None = fd
        self._path = path
        self._durable = durable

    def append(self, data: bytes) -> None:
        if self._fd is None:
            raise StoreError(f"log {self._path} is closed")
        with os_errors("appending to", self._path):
            n = os.write(self._fd, data)
            if n != len(data):
                # A short append leaves a torn line, which readers skip; the caller learns it failed.
                raise OSError(errno.EIO, f"short write ({n} of {len(data)} bytes)")
            if self._durable:
                os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
