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

from ..errors import ResourceLimitError, StoreError, StoreIOError
from .base import Appender, Staged

try:
    import resource
except ImportError:  # not on Windows: no limit to adapt to
    resource = None  # type: ignore[assignment]

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
#: The most pack descriptors the process keeps open, for all its stores together; fewer when
#: the process's descriptor limit is low (see PackDescriptors.budget).
MAX_PACK_FDS = 64


class PackDescriptors:
    """The pack descriptors the process keeps open, least recently used first.

    One cache for every store the process opens, within a budget taken from the process's
    descriptor limit (``RLIMIT_NOFILE``) each time a descriptor is added: a sixteenth of the soft
    limit, at most ``MAX_PACK_FDS``.  So readers never use up the descriptors the rest of the
    process needs, and a read never fails for want of one: with no budget left it opens, reads
    and closes.  Callers hold ``lock`` while they use a descriptor, so none is closed under them."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._fds: OrderedDict[tuple[int, str], int] = OrderedDict()

    @staticmethod
    def budget() -> int:
        if resource is None:
            return MAX_PACK_FDS
        try:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (OSError, ValueError):
            return MAX_PACK_FDS
        if soft == resource.RLIM_INFINITY or soft < 0:
            return MAX_PACK_FDS
        return min(MAX_PACK_FDS, soft // 16)

    def get(self, token: int, key: str) -> int | None:
        fd = self._fds.get((token, key))
        if fd is not None:
            self._fds.move_to_end((token, key))
        return fd

    def keep(self, token: int, key: str, fd: int) -> bool:
        """Keep ``fd`` open for later reads if the budget allows (evicting the oldest first)."""
        budget = self.budget()
        while self._fds and len(self._fds) >= budget:
            _close_quietly(self._fds.popitem(last=False)[1])
        if budget <= 0:
            return False
        self._fds[(token, key)] = fd
        return True

    def close_all(self) -> int:
        """Close every kept descriptor (the process ran out); how many were closed."""
        with self.lock:
            count = len(self._fds)
            while self._fds:
                _close_quietly(self._fds.popitem()[1])
            return count

    def forget(self, token: int) -> None:
        """Close the descriptors of a backend that is gone."""
        with self.lock:
            for item in [item for item in self._fds if item[0] == token]:
                _close_quietly(self._fds.pop(item))

    def after_fork(self) -> None:
        """In a forked child: a thread of the parent may have held the lock at the fork."""
        self.lock = threading.RLock()


PACK_FDS = PackDescriptors()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=PACK_FDS.after_fork)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def open_evicting(path: str, flags: int) -> int:
    """``os.open``; if the process is out of descriptors, close the kept pack descriptors (they
    are only a cache) and try once more."""
    try:
        return os.open(path, flags)
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE) or not PACK_FDS.close_all():
            raise
    return os.open(path, flags)


@contextmanager
def memory_errors(path: str) -> Iterator[None]:
    """A read too large for memory (a sparse file of a terabyte) is a ``ResourceLimitError``."""
    try:
        yield
    except (MemoryError, OverflowError):
        raise ResourceLimitError(
            f"reading {path}: it is larger than this process can hold in memory; "
            "the store is damaged or hostile (run 'tensorcas verify')"
        ) from None


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
