"""A local directory that keeps copies of objects read whole from object storage.

A copy is named by the object's location, key, size and ETag (which changes whenever the object
is replaced), so a replaced object is never served from an old copy; a copy is published by
rename, so it is whole or absent.  Nothing here talks to the service: the backend looks the
object up, asks for a copy, and keeps one after fetching.  The directory grows until it is
emptied by hand.
"""

from __future__ import annotations

import hashlib
import os
import threading

#: With a cache directory, objects read whole from this size up are kept on the local disk.
CACHE_MIN_BYTES = 1 << 20


def copy_path(cache_dir: str, location: str, key: str, etag: object, size: int) -> str:
    """Where the copy of this version of the object is kept."""
    name = hashlib.sha256(f"{location}\0{key}\0{etag}\0{size}".encode()).hexdigest()
    return os.path.join(cache_dir, name[:2], name)


def read_copy(path: str, size: int, out: memoryview) -> int | None:
    """Fill ``out`` (up to ``size`` bytes) from the copy at ``path``; the bytes read, or ``None``
    when there is no whole copy of ``size`` bytes there."""
    wanted = min(size, out.nbytes)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size != size:
            return None
        got = 0
        while got < wanted:
            n = os.readv(fd, [out[got:wanted]])
            if n <= 0:
                break
            got += n
        return got if got == wanted else None
    finally:
        os.close(fd)


def keep_copy(path: str, data: memoryview) -> None:
    """Keep ``data`` (the whole object) at ``path``; a cache that cannot be written only costs
    the next read a fetch."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass
