"""The local backend's ``Grace`` and ``Staging`` abilities: marking files in use, moving them
aside for gc and back, and finding what interrupted writes and gcs left behind."""

from __future__ import annotations

import os
import stat as stat_module
import uuid
from collections.abc import Iterator

from ..errors import UnsafeFileError
from .base import Grace, Leftover, Staging
from .local_files import TMP_PREFIX, TRASH_PREFIX, fsync_dir, os_errors


class LocalCollecting(Grace, Staging):
    """Mixed into ``LocalBackend``: needs its ``_path``, ``_walk`` and ``durable``."""

    durable: bool

    def _path(self, key: str) -> str:
        raise NotImplementedError

    def _walk(self, prefix: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        raise NotImplementedError

    def delete(self, key: str) -> bool:
        raise NotImplementedError

    def temporaries(self) -> Iterator[Leftover]:
        """Temporaries of interrupted writes (``.tmp-*``) and objects an interrupted gc moved
        aside (``.gc-*``), anywhere in the store.  A ``.tmp-*`` entry must be a regular file
        (tensorcas makes no other kind: anything else is junk to ignore); a ``.gc-*`` entry of
        another kind is listed so that gc removes it (``_link_back`` never makes it visible)."""
        for key, entry in self._walk(""):
            if entry.name.startswith(TRASH_PREFIX) or (
                entry.name.startswith(TMP_PREFIX) and entry.is_file(follow_symlinks=False)
            ):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # published or removed meanwhile by the write it belonged to
                yield Leftover(key, st.st_mtime, st.st_size, restores=entry.name.startswith(TRASH_PREFIX))

    # -- writes ------------------------------------------------------------------------------

    def touch(self, key: str) -> bool:
        """Mark the object in use, unless it shares its inode with another name (a hard link,
        perhaps to a file outside the store): changing its time would write to that file too.
        Then ``False``, as for an absent object, and the writer stores its own copy."""
        path = self._path(key)
        with os_errors("touching", path):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return False
            if not stat_module.S_ISREG(st.st_mode):
                raise UnsafeFileError(
                    f"{path} is not a regular file (a symlink?); tensorcas does not follow it"
                )
            if st.st_nlink > 1:
                return False
            try:
                os.utime(path, follow_symlinks=False)
            except FileNotFoundError:
                return False
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
                fsync_dir(os.path.dirname(original))
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
                fsync_dir(os.path.dirname(path))

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
