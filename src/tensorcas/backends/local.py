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
import itertools
import os
import stat as stat_module
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from ..errors import UnsafeFileError
from .base import (
    Appender,
    Appending,
    Backend,
    Data,
    LocalPaths,
    ObjectInfo,
    Segments,
    Staged,
    chunks_of,
)
from .local_files import (
    O_CREATE,
    O_READ,
    PACK_FDS,
    SMALL_READ,
    TMP_PREFIX,
    TRASH_PREFIX,
    LocalAppender,
    LocalStaged,
    fsync_dir,
    memory_errors,
    open_evicting,
    os_errors,
)
from .local_gc import LocalCollecting

__all__ = ["TMP_PREFIX", "TRASH_PREFIX", "LocalBackend", "os_errors"]

#: Keys have at most this many parts (``blobs/ab/cdef...``; docs/FORMAT.md section 1).
MAX_KEY_PARTS = 3
#: Pieces in which a read that is hashed as it arrives is read (see ``read_whole``).
READ_PIECE = 4 << 20

#: Tells backends apart in the process's one cache of pack descriptors.
_tokens = itertools.count()


class LocalBackend(Backend, Appending, LocalPaths, LocalCollecting):
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
        # pack only grows; a deleted one still reads what it held), in one cache for the process
        # (local_files.PACK_FDS), under this backend's token.
        self._token = next(_tokens)
        # Registered with the first kept descriptor: a backend that keeps none needs no
        # finalizer (one that runs inside someone else's deep recursion can fail there).
        self._finalizer: weakref.finalize | None = None

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
            fd = open_evicting(path, O_READ)
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
                    fsync_dir(os.path.dirname(path))
            except FileExistsError:
                pass
        self._check_dir(directory)

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        with os_errors("reading", self._path(key)), memory_errors(self._path(key)):
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
        if length <= SMALL_READ and key.startswith(self.keep_open) and self.keep_open:
            return self._read_pack_range(key, offset, length)
        with os_errors("reading", self._path(key)), memory_errors(self._path(key)):
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
        with PACK_FDS.lock:
            fd = PACK_FDS.get(self._token, key)
            if fd is not None:
                # The common case, on every small read: no path is made unless it fails.
                try:
                    return os.pread(fd, length, offset)  # short at the end of the file
                except OSError:
                    pass  # said again below, with the path
        with PACK_FDS.lock, os_errors("reading", self._path(key)):
            fd = PACK_FDS.get(self._token, key)
            if fd is None:
                fd = self._open_read(key)
                if fd is None:
                    return None
                if not PACK_FDS.keep(self._token, key, fd):
                    # No descriptor to spare under this process's limit: open, read, close.
                    try:
                        return os.pread(fd, length, offset)
                    finally:
                        os.close(fd)
                if self._finalizer is None:
                    self._finalizer = weakref.finalize(self, PACK_FDS.forget, self._token)
            return os.pread(fd, length, offset)  # short at the end of the file

    def read_sparse(self, key: str, offset: int, length: int) -> Segments | None:
        """Segments of a file that is mostly holes, from the filesystem's map of them
        (``SEEK_DATA``/``SEEK_HOLE``); ``None`` where the system cannot tell, and for a file that
        is not mostly holes.  Only a hostile or damaged store has sparse logs, and only for those
        is the map trusted."""
        if not hasattr(os, "SEEK_HOLE"):
            return None
        with os_errors("reading", self._path(key)):
            fd = self._open_read(key)
            if fd is None:
                return None
            try:
                st = os.fstat(fd)
                if st.st_blocks * 512 * 2 >= st.st_size:
                    return None
                end = min(offset + length, st.st_size)
                segments: Segments = []
                position = offset
                while position < end:
                    try:
                        data = os.lseek(fd, position, os.SEEK_DATA)
                    except OSError as exc:
                        if exc.errno == errno.ENXIO:
                            break  # holes up to the end of the file
                        raise
                    if data >= end:
                        break
                    stop = min(os.lseek(fd, data, os.SEEK_HOLE), end)
                    if stop <= data:
                        return None  # an inconsistent map: read every byte instead
                    segments.append((data, os.pread(fd, stop - data, data)))
                    position = stop
                return segments
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                    return None  # the system cannot tell (an optimisation only: read every byte)
                raise
            finally:
                os.close(fd)

    def read_chunks(
        self, key: str, offset: int, length: int, chunk: int
    ) -> Iterator[memoryview | bytes]:
        """As views of two reused buffers of ``chunk`` bytes, the next read (on one helper
        thread) while the caller works on this one: hashing streams about as fast as from a
        mapping, without the SIGBUS a mapping gets if someone truncates the file meanwhile."""
        if length <= chunk:
            yield from super().read_chunks(key, offset, length, chunk)
            return
        path = self._path(key)
        with os_errors("reading", path):
            fd = self._open_read(key)
            if fd is None:
                return
            try:
                buffers = [memoryview(bytearray(chunk)), memoryview(bytearray(chunk))]

                def fill(i: int, done: int) -> int:
                    want = min(chunk, length - done)
                    return os.preadv(fd, [buffers[i][:want]], offset + done) if want > 0 else 0

                with ThreadPoolExecutor(1, thread_name_prefix="tensorcas-read") as pool:
                    done, current = 0, 0
                    pending = pool.submit(fill, current, done)
                    while True:
                        n = pending.result()
                        if n <= 0:
                            return
                        done += n
                        view = buffers[current][:n]
                        current = 1 - current
                        pending = pool.submit(fill, current, done)
                        yield view
            finally:
                os.close(fd)

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

    def read_whole(
        self,
        key: str,
        size: int,
        allocate: Callable[[], memoryview],
        *,
        adopt: Callable[[memoryview], None] | None = None,
        on_piece: Callable[[memoryview], None] | None = None,
    ) -> int | None:
        """The file is opened once and its size taken from the open file; with ``on_piece``
        it is read a :data:`READ_PIECE` at a time, each piece handed over as soon as it is in."""
        del adopt
        if on_piece is None:
            return super().read_whole(key, size, allocate)
        with os_errors("reading", self._path(key)):
            fd = self._open_read(key)
            if fd is None:
                return None
            try:
                found = os.fstat(fd).st_size
                if found != size:
                    return found
                out = allocate()
                total = 0
                while total < size:
                    n = os.readv(fd, [out[total : total + READ_PIECE]])
                    if n == 0:
                        break
                    on_piece(out[total : total + n])
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
        key; hidden directories and symlinks are not entered, nor directories deeper than a key
        can be (``MAX_KEY_PARTS``): they are junk, and a chain of them can be longer than any
        path the system accepts."""
        start = self._path(prefix) if prefix else self.root
        with os_errors("listing", start):
            if not os.path.isdir(self.root) or not self._check_dir(prefix):
                return
            stack = [(start, prefix, prefix.count("/") + 1 if prefix else 0)]
            while stack:
                path, key, parts = stack.pop()
                with os.scandir(path) as entries:
                    for entry in entries:
                        child = f"{key}/{entry.name}" if key else entry.name
                        if entry.is_dir(follow_symlinks=False):
                            if not entry.name.startswith(".") and parts + 1 < MAX_KEY_PARTS:
                                stack.append((entry.path, child, parts + 1))
                        else:
                            yield child, entry

    def put_if_absent(self, key: str, data: Data, *, overwrite: bool = False) -> bool:
        with self.stage(key.rpartition("/")[0]) as staged:
            for chunk in chunks_of(data):
                staged.write(chunk)
            return staged.publish(key, overwrite=overwrite)

    def stage(self, directory: str) -> Staged:
        with os_errors("creating a directory in", self._path(directory)):
            self._makedirs(directory)
        return LocalStaged(self._path, self._makedirs, self.durable, directory)

    def delete(self, key: str) -> bool:
        path = self._path(key)
        with os_errors("deleting", path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            if self.durable:
                fsync_dir(os.path.dirname(path))
            return True

    def open_append(self, key: str) -> Appender:
        directory = key.rpartition("/")[0]
        path = self._path(key)
        with os_errors("creating", path):
            self._makedirs(directory)
            fd = os.open(path, O_CREATE | os.O_APPEND, 0o644)
            try:
                if self.durable:
                    fsync_dir(os.path.dirname(path))
            except BaseException:
                os.close(fd)
                raise
        return LocalAppender(fd, path, self.durable)
