"""The byte-level contract: a small core every backend implements, and optional abilities.

A backend maps ``/``-separated keys to byte strings.  It knows nothing of digests, records, torch
or the store's layout: the layers above decide the keys (``tensorcas.format.layout``), a backend
keeps bytes.  The core is what any object store offers natively:

    get, read_range, stat, put_if_absent, delete, list

Everything else a store can use is an optional *ability*, a small abstract class a backend also
inherits when it can do it natively.  The layers above check for each and
fall back when it is absent (``appending(backend)``, ``local_paths``, ``grace``,
``staging``, ``copying``: the backend as that ability, or ``None``):

==================  =====================================  ======================================
ability             what it gives                          without it
==================  =====================================  ======================================
:class:`Appending`  append-only objects (logs, packs)       a log is re-published whole on each
                                                           entry; small blobs are stored loose
:class:`LocalPaths` a file path per key (memory-mapping)   blobs are read, not mapped
:class:`Grace`      ``touch``, and moving aside what was     gc moves aside by copying, and
                    not touched since a time, atomically   writers cannot mark blobs in use
:class:`Staging`    objects written in pieces before their  a streamed blob is hashed first, then
                    key is known; leftovers listed for gc   put (its source is read twice)
:class:`Copying`    copying an object within the service    the bytes are read and written again
                    (its bytes never reach the client)      (gc's move-aside without ``Grace``)
==================  =====================================  ======================================

Objects are published atomically and never overwritten (``put_if_absent``), except by an explicit
``overwrite=True`` used only to heal a blob known to be damaged.  Read-only access is one wrapper
for every backend (``backends.readonly``).  ``tensorcas.testing`` checks the contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

#: Bytes a backend accepts: one buffer, or an iterable of buffers written in order (a large
#: object is streamed this way, never joined into one copy).
Data = bytes | bytearray | memoryview | Iterable[bytes | bytearray | memoryview]

#: The most bytes :meth:`Backend.read_into` asks of :meth:`Backend.read_range` at once.
READ_WINDOW = 16 << 20

#: What ``read_sparse`` gives: ``(offset, bytes)`` of the data between a sparse file's holes.
Segments = list[tuple[int, bytes]]


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    mtime: float


def chunks_of(data: Data) -> Iterator[memoryview]:
    """The buffers of ``data`` in order, as byte views."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield memoryview(data).cast("B")
    else:
        for chunk in data:
            yield memoryview(chunk).cast("B")


class Backend(ABC):
    """Key/value storage for one store: the core every backend implements."""

    #: A human-readable location, used in messages.
    location: str

    #: How many reads are worth sending at once where many objects are wanted (a store opening
    #: its logs): 1 where a read is a system call on a local file, more where each read waits a
    #: round trip on a service.  A hint only; every read stays correct alone.
    parallel_reads: int = 1

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The whole object, or ``None`` if absent."""

    @abstractmethod
    def read_range(self, key: str, offset: int, length: int) -> bytes | None:
        """Up to ``length`` bytes from ``offset`` (fewer at the end), or ``None`` if absent."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size and modification time, or ``None`` if absent."""

    @abstractmethod
    def put_if_absent(self, key: str, data: Data, *, overwrite: bool = False) -> bool:
        """Publish ``data`` under ``key`` atomically: readers see all of it or nothing.  ``False``
        (and nothing written) if an object was already there, unless ``overwrite``."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the object; ``False`` if it was absent."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys under the directory ``prefix`` (recursively; ``''`` for all), in no order.
        A missing prefix lists nothing."""

    # -- built on the core; a backend may override them with something faster ------------------

    def list_info(self, prefix: str) -> Iterator[tuple[str, ObjectInfo | None]]:
        """The keys :meth:`list` gives, each with its size and mtime where the listing told them
        (``None``: not told; ``stat`` it).  An object store's listing tells them, which saves a
        request per key to a caller about to read what it lists (a store reading its logs)."""
        return ((key, None) for key in self.list(prefix))

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def read_into(self, key: str, out: memoryview) -> int | None:
        """Fill ``out`` from the start of the object; the number of bytes read (fewer if the object
        is shorter), ``None`` if absent."""
        total = 0
        while total < out.nbytes:
            piece = self.read_range(key, total, min(out.nbytes - total, READ_WINDOW))
            if piece is None:
                return None if total == 0 else total
            if not piece:
                break
            out[total : total + len(piece)] = piece
            total += len(piece)
        if total == 0 and out.nbytes == 0 and not self.exists(key):
            return None
        return total

    def read_whole(
        self,
        key: str,
        size: int,
        allocate: Callable[[], memoryview],
        *,
        adopt: Callable[[memoryview], None] | None = None,
        on_piece: Callable[[memoryview], None] | None = None,
    ) -> int | None:
        """Read the whole object, which should hold ``size`` bytes, into the buffer of ``size``
        bytes that ``allocate()`` returns, asked for only once the object is known to hold
        ``size`` bytes: a size claimed elsewhere (a record) costs no memory until the object
        confirms it.  Returns the object's size as found, or ``None`` if it is absent (or vanished
        while it was read).  The buffer is filled exactly when ``size`` is returned; any other
        number means the object holds another size (the buffer was not asked for) or changed
        size while it was read.

        ``adopt``, if given, may be called instead of ``allocate`` with a writable buffer of
        exactly the object's ``size`` bytes that the backend made for this read alone, which the
        caller then owns: the bytes are not copied again.

        ``on_piece``, if given, may be called with each piece of the buffer, in order, as soon as
        it is filled (while the next is read), so that the caller can hash the bytes as they
        arrive; a backend that reads in one go does not call it, and the caller then sees that
        fewer bytes than ``size`` were passed to it.

        Here a ``stat``, then ``read_into``; a backend whose read reports the size (an object
        store's ``GET``) overrides it with one request."""
        info = self.stat(key)
        if info is None:
            return None
        if info.size != size:
            return info.size
        return self.read_into(key, allocate())

    def read_chunks(
        self, key: str, offset: int, length: int, chunk: int
    ) -> Iterator[memoryview | bytes]:
        """Up to ``length`` bytes from ``offset``, ``chunk`` bytes at a time (fewer at the end of
        the object; nothing if it is absent), so that a caller streaming a large object (verify
        hashing it) holds one piece at a time whatever size the object claims.  Each piece is
        valid until the next one is asked for."""
        done = 0
        while done < length:
            piece = self.read_range(key, offset + done, min(chunk, length - done))
            if not piece:
                return
            yield piece
            done += len(piece)

    def read_sparse(self, key: str, offset: int, length: int) -> Segments | None:
        """The bytes really stored in ``[offset, offset + length)`` of an object that is mostly
        holes (a sparse file), as ``(offset, bytes)`` segments in order: the gaps between them
        read as zeros.  ``None`` (read it as usual) where the backend cannot tell, which is
        always unless it overrides this."""
        return None


# -- optional abilities -------------------------------------------------------------------------


class Appender(ABC):
    """An append-only object owned by one writer; each ``append`` lands whole or not at all."""

    @abstractmethod
    def append(self, data: bytes) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


class Appending(ABC):
    """Objects that grow by appends, each visible at once: logs and packs."""

    @abstractmethod
    def open_append(self, key: str) -> Appender:
        """Create ``key`` (it must not exist) and return an appender for it."""


class LocalPaths(ABC):
    """Objects that are files: a path lets a reader memory-map a blob or hash it in place."""

    @abstractmethod
    def local_path(self, key: str) -> str | None:
        """A filesystem path holding exactly the object, or ``None``."""


class Grace(ABC):
    """Marking objects in use, and moving aside only objects not marked since a time: what lets
    gc collect while writers reuse blobs.

    gc is two-phase (see ``maintenance.gc``): it moves each candidate aside with
    :meth:`quarantine`, reads the logs again, then puts back (:meth:`restore`) what a record uses
    by then and deletes the rest (:meth:`purge`).
    """

    @abstractmethod
    def touch(self, key: str) -> bool:
        """Mark the object as in use now (for gc's grace period); ``False`` if absent."""

    @abstractmethod
    def quarantine(self, key: str, older_than: float) -> str | None:
        """Move the object aside if it was not touched after ``older_than`` (a Unix time): from
        then on it is absent to every other call, until :meth:`restore` puts it back or
        :meth:`purge` deletes it.  Returns the key of the moved-aside object (a temporary), or
        ``None`` if the object is absent or was touched after ``older_than`` (it then stays).

        Atomic against a concurrent ``touch``: an object touched at any moment before this returns
        is either kept, or was moved aside before the touch (and the toucher sees it absent).
        """

    @abstractmethod
    def restore(self, trash: str) -> None:
        """Put a moved-aside object back under its key (unless an object is there again)."""

    @abstractmethod
    def purge(self, trash: str) -> None:
        """Delete a moved-aside object for good (nothing if it is gone already)."""

    def delete_if_stale(self, key: str, older_than: float) -> bool:
        """Remove the object only if it was not touched after ``older_than``; atomic like
        :meth:`quarantine`."""
        trash = self.quarantine(key, older_than)
        if trash is None:
            return False
        self.purge(trash)
        return True


class Copying(ABC):
    """Copying an object inside the service (an object store's server-side copy): what lets gc
    move a blob aside, and put it back, without its bytes passing through the client."""

    @abstractmethod
    def copy(self, source: str, dest: str, size: int, *, if_absent: bool) -> bool | None:
        """Copy the object ``source``, of ``size`` bytes (as its ``stat`` said), to ``dest``.

        ``if_absent``: not if an object is at ``dest`` (then ``False``); otherwise ``dest`` is a
        fresh name nothing else writes.  ``True`` once the copy is whole at ``dest``.  ``None``
        when the service cannot copy this object itself (absent, not one plain object, too
        large for one copy request): the caller copies its bytes through the client instead.
        """


class Staged(ABC):
    """An object being written in pieces, invisible until published under its final key."""

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


@dataclass(frozen=True)
class Leftover:
    """A temporary left by an interrupted write or gc: ``restores`` when removing it puts an
    object back (a gc moved it aside and was stopped before deciding its fate)."""

    key: str
    mtime: float
    size: int = 0
    restores: bool = False


class Staging(ABC):
    """Objects written before their key is known (a blob streamed while it is hashed), and the
    leftovers of writes that were interrupted."""

    @abstractmethod
    def stage(self, directory: str) -> Staged:
        """Start writing an object that will be published inside ``directory``."""

    @abstractmethod
    def temporaries(self) -> Iterator[Leftover]:
        """Leftover temporaries of interrupted writes and gcs."""

    @abstractmethod
    def delete_temporary(self, key: str) -> bool:
        """Remove a leftover (restoring what it stood for, if :attr:`Leftover.restores`)."""


# Each ability's check: the backend as an implementation of it, or ``None``.


def appending(backend: Backend) -> Appending | None:
    return backend if isinstance(backend, Appending) else None


def local_paths(backend: Backend) -> LocalPaths | None:
    return backend if isinstance(backend, LocalPaths) else None


def grace(backend: Backend) -> Grace | None:
    return backend if isinstance(backend, Grace) else None


def copying(backend: Backend) -> Copying | None:
    return backend if isinstance(backend, Copying) else None


def staging(backend: Backend) -> Staging | None:
    return backend if isinstance(backend, Staging) else None
