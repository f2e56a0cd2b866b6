"""A backend in a dict, for tests and for stores that live only as long as a process.

It has every optional ability except ``LocalPaths``."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator

from .base import (
    Appender,
    Appending,
    Backend,
    Data,
    Grace,
    Leftover,
    ObjectInfo,
    Staged,
    Staging,
    chunks_of,
)

_counter = itertools.count()


class MemoryBackend(Backend, Appending, Grace, Staging):
    def __init__(self) -> None:
        self.location = f"memory://{id(self):x}"
        self._objects: dict[str, bytes | bytearray] = {}
        self._mtimes: dict[str, float] = {}
        self._staged: dict[str, tuple[bytearray, float]] = {}
        self._trash: dict[str, tuple[str, bytes | bytearray, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._objects.get(key)
            return None if data is None else bytes(data)

    def read_range(self, key: str, offset: int, length: int) -> bytes | None:
        with self._lock:
            data = self._objects.get(key)
            return None if data is None else bytes(data[offset : offset + length])

    def read_into(self, key: str, out: memoryview) -> int | None:
        with self._lock:
            data = self._objects.get(key)
            if data is None:
                return None
            n = min(len(data), out.nbytes)
            out[:n] = data[:n]
            return n

    def stat(self, key: str) -> ObjectInfo | None:
        with self._lock:
            data = self._objects.get(key)
            return None if data is None else ObjectInfo(len(data), self._mtimes[key])

    def put_if_absent(self, key: str, data: Data, *, overwrite: bool = False) -> bool:
        return self._publish(key, b"".join(chunks_of(data)), overwrite)

    def stage(self, directory: str) -> Staged:
        return _MemoryStaged(self, f"{directory}/.tmp-{next(_counter)}")

    def _publish(self, key: str, data: bytes, overwrite: bool) -> bool:
        with self._lock:
            if key in self._objects and not overwrite:
                return False
            self._objects[key] = data
            self._mtimes[key] = time.time()
            return True

    def touch(self, key: str) -> bool:
        with self._lock:
            if key not in self._objects:
                return False
            self._mtimes[key] = time.time()
            return True

    def delete(self, key: str) -> bool:
        with self._lock:
            self._mtimes.pop(key, None)
            return self._objects.pop(key, None) is not None

    def quarantine(self, key: str, older_than: float) -> str | None:
        with self._lock:
            if key not in self._objects or self._mtimes[key] > older_than:
                return None
            trash = f"{key}.trash-{uuid.uuid4().hex[:8]}"
            self._trash[trash] = (key, self._objects.pop(key), self._mtimes.pop(key))
            return trash

    def restore(self, trash: str) -> None:
        with self._lock:
            found = self._trash.pop(trash, None)
            if found is not None and found[0] not in self._objects:
                key, data, mtime = found
                self._objects[key], self._mtimes[key] = data, mtime

    def purge(self, trash: str) -> None:
        with self._lock:
            self._trash.pop(trash, None)

    def list(self, prefix: str) -> Iterator[str]:
        start = prefix.strip("/") + "/" if prefix.strip("/") else ""
        with self._lock:
            keys = [k for k in self._objects if k.startswith(start)]
        return iter(keys)

    def open_append(self, key: str) -> Appender:
        with self._lock:
            if key in self._objects:
                raise FileExistsError(key)
            self._objects[key] = bytearray()
            self._mtimes[key] = time.time()
        return _MemoryAppender(self, key)

    def temporaries(self) -> Iterator[Leftover]:
        with self._lock:
            return iter([Leftover(k, t, len(data)) for k, (data, t) in self._staged.items()])

    def delete_temporary(self, key: str) -> bool:
        with self._lock:
            return self._staged.pop(key, None) is not None


class _MemoryStaged(Staged):
    def __init__(self, backend: MemoryBackend, key: str) -> None:
        self._backend = backend
        self._key = key
        self._buffer = bytearray()
        with backend._lock:
            backend._staged[key] = (self._buffer, time.time())

    def write(self, data: memoryview | bytes) -> None:
        self._buffer += data

    def publish(self, key: str, *, overwrite: bool = False) -> bool:
        published = self._backend._publish(key, bytes(self._buffer), overwrite)
        self.abort()
        return published

    def abort(self) -> None:
        self._backend.delete_temporary(self._key)


class _MemoryAppender(Appender):
    def __init__(self, backend: MemoryBackend, key: str) -> None:
        self._backend = backend
        self._key = key

    def append(self, data: bytes) -> None:
        with self._backend._lock:
            log = self._backend._objects[self._key]
            assert isinstance(log, bytearray)
            log += data
            self._backend._mtimes[self._key] = time.time()

    def close(self) -> None:
        pass
