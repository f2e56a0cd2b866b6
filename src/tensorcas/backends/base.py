"""The byte-level contract every backend fulfils.

A backend maps ``/``-separated keys to immutable byte strings.  It knows nothing of digests,
records or torch: the store decides keys (``format.blob_key``), the backend keeps bytes.  The
contract is small on purpose; everything else is built on it, and one conformance suite
(``tests/backend_conformance.py``) checks every implementation.

Objects are published atomically and never overwritten (``put_if_absent``, ``Staged.publish``),
except by an explicit ``overwrite=True`` used only to heal a blob known to be damaged.  Logs are the
one mutable kind of object: append-only, each owned by a single writer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    mtime: float


class Staged(ABC):
    """A blob being written in pieces, invisible until published under its final key."""

    @abstractmethod
    def write(self, data: memoryview | bytes) -> None: ...

    @abstractmethod
    def publish(self, key: str, *, overwrite: bool = False) -> bool:
        """Make the bytes visible under ``key``; ``False`` if an object was already there."""

    @abstractmethod
    def abort(self) -> None:
        """Discard the bytes; safe to call more than once and after ``publish``."""

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class Appender(ABC):
    """An append-only object owned by one writer; each ``append`` lands whole or not at all."""

    @abstractmethod
    def append(self, data: bytes) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


class Backend(ABC):
    """Key/value storage for one store."""

    #: A human-readable location, used in messages.
    location: str
    #: Whether the backend is read-only; writes raise.
    read_only: bool = False

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The whole object, or ``None`` if absent."""

    @abstractmethod
    def read_range(self, key: str, offset: int, length: int) -> bytes | None:
        """Up to ``length`` bytes from ``offset`` (fewer at the end), or ``None`` if absent."""

    @abstractmethod
    def read_into(self, key: str, out: memoryview) -> int | None:
        """Fill ``out`` from the start of the object; the number of bytes read, ``None`` if absent."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size and modification time, or ``None`` if absent."""

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    @abstractmethod
    def stage(self, directory: str) -> Staged:
        """Start writing an object that will be published inside ``directory``."""

    def put_if_absent(self, key: str, data: memoryview | bytes, *, overwrite: bool = False) -> bool:
        """Publish ``data`` under ``key`` atomically; ``False`` if an object was already there."""
        staged = self.stage(key.rpartition("/")[0])
        try:
            staged.write(data)
            return staged.publish(key, overwrite=overwrite)
        finally:
            staged.abort()

    @abstractmethod
    def touch(self, key: str) -> bool:
        """Mark the object as in use now (for gc's grace period); ``False`` if absent."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the object; ``False`` if it was absent."""

    def delete_if_stale(self, key: str, older_than: float) -> bool:
        """Remove the object only if it was not touched after ``older_than`` (a Unix time).

        Atomic against a concurrent ``touch``: an object touched at any moment before this returns
        is either kept, or was removed before the touch (and the toucher sees it absent).
        """
        trash = self.quarantine(key, older_than)
        if trash is None:
            return False
        self.purge(trash)
        return True

    @abstractmethod
    def quarantine(self, key: str, older_than: float) -> str | None:
        """Move the object aside if it was not touched after ``older_than``: from then on it is
        absent to every other call, until :meth:`restore` puts it back or :meth:`purge` deletes
        it.  Returns the key of the moved-aside object (a temporary), or ``None`` if the object
        is absent or was touched after ``older_than`` (it then stays where it is).

        Atomic against a concurrent ``touch`` like :meth:`delete_if_stale`.  gc moves aside,
        reads the logs again, then restores what a record uses by then and purges the rest.
        """

    @abstractmethod
    def restore(self, trash: str) -> None:
        """Put a moved-aside object back under its key (unless an object is there again)."""

    @abstractmethod
    def purge(self, trash: str) -> None:
        """Delete a moved-aside object for good (nothing if it is gone already)."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys under the directory ``prefix`` (recursively), temporaries excluded, in no order."""

    @abstractmethod
    def open_append(self, key: str) -> Appender:
        """Create ``key`` (it must not exist) and return an appender for it."""

    @abstractmethod
    def temporaries(self) -> Iterator[tuple[str, float]]:
        """Leftover temporaries of interrupted writes, with their modification times."""

    @abstractmethod
    def delete_temporary(self, key: str) -> bool: ...

    def local_path(self, key: str) -> str | None:
        """A filesystem path to the object if it has one (enables memory-mapping), else ``None``."""
        return None
