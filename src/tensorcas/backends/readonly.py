"""Read-only access to any backend: one wrapper, so that no backend has to enforce it itself.

Readers, ``verify``, ``du`` and the other read-only commands open stores through it: every write
raises :class:`ReadOnlyStoreError`, and only the abilities that read (a local path to map) are
passed through, so the layers above never even try an append, a touch or a temporary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..errors import ReadOnlyStoreError
from .base import Backend, Data, LocalPaths, ObjectInfo, Segments


class ReadOnlyBackend(Backend):
    """``inner`` with every write refused."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.location = inner.location
        self.parallel_reads = inner.parallel_reads

    def get(self, key: str) -> bytes | None:
        return self.inner.get(key)

    def read_range(self, key: str, offset: int, length: int) -> bytes | None:
        return self.inner.read_range(key, offset, length)

    def read_into(self, key: str, out: memoryview) -> int | None:
        return self.inner.read_into(key, out)

    def read_whole(
        self,
        key: str,
        size: int,
        allocate: Callable[[], memoryview],
        *,
        adopt: Callable[[memoryview], None] | None = None,
        on_piece: Callable[[memoryview], None] | None = None,
    ) -> int | None:
        return self.inner.read_whole(key, size, allocate, adopt=adopt, on_piece=on_piece)

    def read_chunks(
        self, key: str, offset: int, length: int, chunk: int
    ) -> Iterator[memoryview | bytes]:
        return self.inner.read_chunks(key, offset, length, chunk)

    def read_sparse(self, key: str, offset: int, length: int) -> Segments | None:
        return self.inner.read_sparse(key, offset, length)

    def stat(self, key: str) -> ObjectInfo | None:
        return self.inner.stat(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def list_info(self, prefix: str) -> Iterator[tuple[str, ObjectInfo | None]]:
        return self.inner.list_info(prefix)

    def put_if_absent(self, key: str, data: Data, *, overwrite: bool = False) -> bool:
        raise self._refuse(f"write {key}")

    def delete(self, key: str) -> bool:
        raise self._refuse(f"delete {key}")

    def _refuse(self, what: str) -> ReadOnlyStoreError:
        return ReadOnlyStoreError(
            f"cannot {what}: store {self.location} was opened read-only; open it for writing to change it"
        )


class _ReadOnlyLocalPaths(ReadOnlyBackend, LocalPaths):
    def local_path(self, key: str) -> str | None:
        assert isinstance(self.inner, LocalPaths)
        return self.inner.local_path(key)


def read_only(backend: Backend) -> ReadOnlyBackend:
    """``backend`` with every write refused (a read-only backend is returned as is)."""
    if isinstance(backend, ReadOnlyBackend):
        return backend
    return _ReadOnlyLocalPaths(backend) if isinstance(backend, LocalPaths) else ReadOnlyBackend(backend)
