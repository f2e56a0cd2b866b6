"""Collecting blobs and packs, for gc: move aside, decide, then restore or purge.

With the backend's ``Grace`` ability the move is atomic against a writer marking the object in
use; without it the object is copied to a temporary key and deleted, and writers, which cannot mark
anything in use there, rely on the check they make after their record (``Placement.confirm``).
The copy is the service's own (``Copying``: an object store's server-side copy) where it can make
one, so that no blob's bytes pass through gc; otherwise gc reads the bytes and writes them again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from ..backends import base
from ..backends.base import READ_WINDOW
from ..errors import CorruptObjectError


class Collector:
    """gc's hands on one store's objects."""

    def __init__(self, backend: base.Backend) -> None:
        self.backend = backend
        self._grace = base.grace(backend)
        self._copying = base.copying(backend)

    def quarantine(self, key: str, cutoff: float) -> str | None:
        """Move a blob or pack not marked in use since ``cutoff`` aside (absent to everyone until
        :meth:`restore` or :meth:`purge`); its temporary key, or ``None`` if it stays.

        With ``Grace`` this is atomic against a concurrent :meth:`reuse`.  Without it the object
        is copied to a temporary key and deleted (writers cannot mark it in use there; the check
        they make after their record, ``Placement.confirm``, is what keeps their blobs)."""
        if self._grace is not None:
            return self._grace.quarantine(key, cutoff)
        info = self.backend.stat(key)
        if info is None or info.mtime > cutoff:
            return None
        directory, _, name = key.rpartition("/")
        trash = f"{directory}/{_TRASH_PREFIX}{name}.{uuid.uuid4().hex[:8]}"
        # A fresh name: the copy need not be conditional.
        if not self._copy(key, trash, info.size, if_absent=False):
            return None
        self.backend.delete(key)
        return trash

    def restore(self, trash: str) -> None:
        """Put a moved-aside object back (unless it was stored again meanwhile)."""
        if self._grace is not None:
            self._grace.restore(trash)
            return
        info = self.backend.stat(trash)
        if info is not None:
            self._copy(trash, _original(trash), info.size, if_absent=True)
            self.backend.delete(trash)

    def purge(self, trash: str) -> None:
        """Delete a moved-aside object for good."""
        if self._grace is not None:
            self._grace.purge(trash)
        else:
            self.backend.delete(trash)

    def _copy(self, source: str, dest: str, size: int, *, if_absent: bool) -> bool:
        """Copy ``source`` to ``dest`` (unless something is there, if ``if_absent``): by the
        service where it can, through the client otherwise; whether it was copied."""
        if self._copying is not None:
            copied = self._copying.copy(source, dest, size, if_absent=if_absent)
            if copied is not None:
                return copied
        return self.backend.put_if_absent(dest, self._pieces(source, size))

    def _pieces(self, key: str, size: int) -> Iterable[bytes]:
        for offset in range(0, size, READ_WINDOW):
            piece = self.backend.read_range(key, offset, min(READ_WINDOW, size - offset))
            if not piece:
                raise CorruptObjectError(f"{key} changed while it was moved aside")
            yield piece

    def leftovers(self) -> list[base.Leftover]:
        """Temporaries of interrupted writes (``Staging``), and objects a killed gc moved aside."""
        staging = base.staging(self.backend)
        if staging is not None:
            return list(staging.temporaries())
        out = []
        for key in self.backend.list(""):
            if key.rpartition("/")[2].startswith(_TRASH_PREFIX):
                info = self.backend.stat(key)
                if info is not None:
                    out.append(base.Leftover(key, info.mtime, info.size, restores=True))
        return out

    def remove_leftover(self, leftover: base.Leftover) -> bool:
        """Remove a leftover; one that :attr:`~base.Leftover.restores` is put back instead."""
        staging = base.staging(self.backend)
        if staging is not None:
            return staging.delete_temporary(leftover.key)
        if not leftover.restores or not self.backend.exists(leftover.key):
            return False
        self.restore(leftover.key)
        return True


#: How objects moved aside by gc are named without ``Grace`` (the local backend uses the same).
_TRASH_PREFIX = ".gc-"


def _original(trash: str) -> str:
    directory, _, name = trash.rpartition("/")
    return f"{directory}/{name[len(_TRASH_PREFIX) :].rsplit('.', 1)[0]}"
