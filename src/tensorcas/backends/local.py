"""A store in a directory of the local filesystem.

Blobs are published the way git and restic publish objects: write a temporary file in the target
directory, check its length, then ``link`` it to its final name, which fails rather than overwrite
if the name exists.  A reader therefore never sees half a blob, and a writer killed at any moment
leaves only ``.tmp-*`` files, which gc removes once they are older than its grace period.

With ``durable=True`` every publish is also made durable against power loss: the file is fsynced
before it is linked, its directory after, and log appends are fsynced before they return.

Untrusted stores: every open uses ``O_NOFOLLOW`` and checks that it got a regular file; the
directories on a key's way are checked with ``lstat`` once; keys come only from
``tensorcas.format.layout``, which builds them from validated digests and writer ids, never from
names.  This backend knows nothing of that layout: it keeps files under keys.

It has every optional ability (``Appending``, ``LocalPaths``, ``Grace``, ``Staging``).
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import StoreError, StoreIOError, UnsafeFileError
from .base import (
    Appender,
    Appending,
    Backend,
    Data,
    Grace,
    Leftover,
    LocalPaths,
    ObjectInfo,
    Staged,
    Staging,
    chunks_of,
)

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".gc-"
# O_NONBLOCK: opening a FIFO planted in a store must not wait for a writer (it is then refused as
# not a regular file); on regular files the flag changes nothing.
_O_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


@contextmanager
def os_errors(action: str, path: str) -> Iterator[None]:
    """Turn an ``OSError`` into a :class:`StoreIOError` that says what failed where."""
    try:
        yield
    except StoreError:
        raise
    except OSError as exc:
        raise StoreIOError(f"{action} {path} failed: {exc.strerror or exc}") from exc


class LocalBackend(Backend, Appending, LocalPaths, Grace, Staging):
    """Files under ``root`` (created on the first write).

    Args:
        durable: fsync every publish, append and directory change before it returns.
        keep_open: key prefixes of objects that only ever grow and are read a little at a time
            (packs): their descriptors are kept open between small reads.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, durable: bool = False, keep_open: tuple[str, ...] = ()
    ) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.location = self.root
        self.durable = durable
        self.keep_open = keep_open
        self._root_made = False
        self._checked_dirs: set[str] = set()
        # Packs are read a few hundred bytes at a time, so their descriptors are kept open (a
        # pack only grows; a deleted one still reads what it held).
        self._pack_fds: OrderedDict[str, int] = OrderedDict()
        self._pack_fds_lock = threading.Lock()
        weakref.finalize(self, _close_all, self._pack_fds, self._pack_fds_lock)

    # -- paths -------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _check_dir(self, directory: str) -> bool:
        """Whether ``directory`` (a key prefix) exists as real directories, never symlinks."""
        if directory in self._checked_dirs or not directory:
            return True
        path = self.root
        for part in directory.split("/"):
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return False
            if not stat_module.S_ISDIR(st.st_mode):
                raise UnsafeFileError(f"{path} is not a directory (a symlink?); tensorcas does not follow it")
        self._checked_dirs.add(directory)
        return True

    def _open_read(self, key: str) -> int | None:
        directory = key.rpartition("/")[0]
        if not self._check_dir(directory):
            return None
        path = self._path(key)
        try:
            fd = os.open(path, _O_READ)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFileError(f"{path} is a symlink; tensorcas does not follow links in a store") from None
            raise
        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafeFileError(f"{path} is not a regular file")
        return fd

    def _makedirs(self, directory: str) -> None:
        if not self._root_made:
            os.makedirs(self.root, exist_ok=True)
            self._root_made = True
        if directory in self._checked_dirs or not directory:
            return
        path = self.root
        for part in directory.split("/"):
            path = os.path.join(path, part)
            try:
                os.mkdir(path)
                if self.durable:
                    _fsync_dir(os.path.dirname(path))
            except FileExistsError:
                pass
        self._check_dir(directory)

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        with os_errors("reading", self._path(key)):
            fd = self._open_read(key)
            if fd is None:
                return None
            try:
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                os.close(fd)

    def read_range(self, key: str, offset: int, length: int) -> bytes | None:
        if length <= _SMALL_READ and key.startswith(self.keep_open) and self.keep_open:
            return self._read_pack_range(key, offset, length)
        with os_errors("reading", self._path(key)):
            fd = self._open_read(key)
            if fd is None:
                return None
            try:
                # Never ask for more than the file holds: a damaged record may name any length.
                length = max(0, min(length, os.fstat(fd).st_size - offset))
                return os.pread(fd, length, offset)
            finally:
                os.close(fd)

    def _read_pack_range(self, key: str, offset: int, length: int) -> bytes | None:
        with self._pack_fds_lock, os_errors("reading", self._path(key)):
            fd = self._pack_fds.get(key)
            if fd is None:
                fd = self._open_read(key)
                if fd is None:
                    return None
                self._pack_fds[key] = fd
                if len(self._pack_fds) > _MAX_PACK_FDS:
                    os.close(self._pack_fds.popitem(last=False)[1])
            else:
                self._pack_fds.move_to_end(key)
            return os.pread(fd, length, offset)  # short at the end of the file

    def read_into(self, key: str, out: memoryview) -> int | None:
        with os_errors("reading", self._path(key)):
            fd = self._open_read(key)
            if fd is None:
                return None
            try:
                total = 0
                while total < out.nbytes:
                    n = os.readv(fd, [out[total : total + (1 << 30)]])
                    if n == 0:
                        break
                    total += n
                return total
            finally:
                os.close(fd)

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        with os_errors("inspecting", path):
            if not self._check_dir(key.rpartition("/")[0]):
                return None
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return None
            if not stat_module.S_ISREG(st.st_mode):
                raise UnsafeFileError(f"{path} is not a regular file (a symlink?); tensorcas does not follow it")
            return ObjectInfo(st.st_size, st.st_mtime)

    def local_path(self, key: str) -> str | None:
        return self._path(key)

    def list(self, prefix: str) -> Iterator[str]:
        prefix = prefix.strip("/")
        for key, entry in self._walk(prefix):
            # Symlinks and special files too: reading them is refused, so that the store sees
            # (and reports) them rather than skipping them quietly.
            if not entry.name.startswith("."):
                yield key

    def _walk(self, prefix: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """Every entry below ``prefix`` that is not a directory (hidden ones included), with its
        key; hidden directories and symlinks are not entered."""
        start = self._path(prefix) if prefix else self.root
        with os_errors("listing", start):
            if not os.path.isdir(self.root) or not self._check_dir(prefix):
                return
            stack = [(start, prefix)]
            while stack:
                path, key = stack.pop()
                with os.scandir(path) as entries:
                    for entry in entries:
                        child = f"{key}/{entry.name}" if key else entry.name
                        if entry.is_dir(follow_symlinks=False):
                            if not entry.name.startswith("."):
                                stack.append((entry.path, child))
                        else:
                            yield child, entry

    def temporaries(self) -> Iterator[Leftover]:
        """Temporaries of interrupted writes (``.tmp-*``) and objects an interrupted gc moved
        aside (``.gc-*``), anywhere in the store."""
        for key, entry in self._walk(""):
            if entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                st = entry.stat(follow_symlinks=False)
                yield Leftover(key, st.st_mtime, st.st_size, restores=entry.name.startswith(TRASH_PREFIX))

    # -- writes ------------------------------------------------------------------------------

    def put_if_absent(self, key: str, data: Data, *, overwrite: bool = False) -> bool:
        with self.stage(key.rpartition("/")[0]) as staged:
            for chunk in chunks_of(data):
                staged.write(chunk)
            return staged.publish(key, overwrite=overwrite)

    def stage(self, directory: str) -> Staged:
        with os_errors("creating a directory in", self._path(directory)):
            self._makedirs(directory)
        return _LocalStaged(self, directory)

    def touch(self, key: str) -> bool:
        path = self._path(key)
        with os_errors("touching", path):
            try:
                os.utime(path, follow_symlinks=False)
            except FileNotFoundError:
                return False
            return True

    def delete(self, key: str) -> bool:
        path = self._path(key)
        with os_errors("deleting", path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            if self.durable:
                _fsync_dir(os.path.dirname(path))
            return True

    def quarantine(self, key: str, older_than: float) -> str | None:
        """Move the object aside, then look at its mtime: a toucher either touched it before the
        move (the mtime is fresh, so it is moved back) or after (the touch fails and the toucher
        writes the blob again)."""
        path = self._path(key)
        directory, _, base = path.rpartition(os.sep)
        trash_base = f"{TRASH_PREFIX}{base}.{uuid.uuid4().hex[:8]}"
        trash = os.path.join(directory, trash_base)
        with os_errors("collecting", path):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return None
            if st.st_mtime > older_than or not stat_module.S_ISREG(st.st_mode):
                return None
            try:
                os.rename(path, trash)
            except FileNotFoundError:
                return None
            if os.lstat(trash).st_mtime > older_than:
                self._link_back(trash, path)
                return None
        return f"{key.rpartition('/')[0]}/{trash_base}"

    def restore(self, trash: str) -> None:
        directory, _, base = trash.rpartition("/")
        if not base.startswith(TRASH_PREFIX):
            raise ValueError(f"{trash} is not a moved-aside object")
        original = os.path.join(self._path(directory), base[len(TRASH_PREFIX) :].rsplit(".", 1)[0])
        with os_errors("restoring", original):
            self._link_back(self._path(trash), original)

    def _link_back(self, trash: str, original: str) -> None:
        """Link a moved-aside regular file back to its name (unless something is there again),
        then remove the trash name.  Anything else under a trash name is only removed: gc never
        makes a planted symlink or special file visible under a store's name."""
        try:
            st = os.lstat(trash)
        except FileNotFoundError:
            return  # restored or purged by another gc
        if stat_module.S_ISREG(st.st_mode):
            try:
                os.link(trash, original)
            except FileExistsError:
                pass  # written again meanwhile: the trash copy is redundant
            if self.durable:
                _fsync_dir(os.path.dirname(original))
        try:
            os.unlink(trash)
        except FileNotFoundError:
            pass

    def purge(self, trash: str) -> None:
        path = self._path(trash)
        with os_errors("collecting", path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                return
            if self.durable:
                _fsync_dir(os.path.dirname(path))

    def delete_temporary(self, key: str) -> bool:
        base = key.rpartition("/")[2]
        if not base.startswith((TMP_PREFIX, TRASH_PREFIX)):
            raise ValueError(f"{key} is not a temporary")
        if base.startswith(TRASH_PREFIX):
            # A gc was interrupted between moving an object aside and deciding its fate.  A
            # writer may have referenced it meanwhile, so put it back; the next gc decides again.
            if not os.path.lexists(self._path(key)):
                return False
            self.restore(key)
            return True
        return self.delete(key)

    def open_append(self, key: str) -> Appender:
        directory = key.rpartition("/")[0]
        path = self._path(key)
        with os_errors("creating", path):
            self._makedirs(directory)
            fd = os.open(path, _O_CREATE | os.O_APPEND, 0o644)
            try:
                if self.durable:
                    _fsync_dir(os.path.dirname(path))
            except BaseException:
                os.close(fd)
                raise
        return _LocalAppender(fd, path, self.durable)


#: Reads of packs up to this size use a kept-open descriptor (larger ones are clamped to the
#: file's size first, so that a damaged length cannot allocate without bound).
_SMALL_READ = 1 << 20
_MAX_PACK_FDS = 64


def _close_all(fds: OrderedDict[str, int], lock: threading.Lock) -> None:
    with lock:
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        fds.clear()


class _LocalStaged(Staged):
    def __init__(self, backend: LocalBackend, directory: str) -> None:
        self._backend = backend
        self._dir = backend._path(directory)
        self._tmp = os.path.join(self._dir, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        self._written = 0
        with os_errors("creating a temporary file in", self._dir):
            self._fd: int | None = os.open(self._tmp, _O_CREATE, 0o444)

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
        final = self._backend._path(key)
        with os_errors("publishing", final):
            self._backend._makedirs(key.rpartition("/")[0])
            if self._backend.durable:
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
            if published and self._backend.durable:
                _fsync_dir(os.path.dirname(final))
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


class _LocalAppender(Appender):
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


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


