"""Work started now and waited for later (or never), on threads the process keeps.

Opening a store lists its logs while the marker is read, and a writer creates its log while its
first upload runs: each is one request overlapped with another.  Starting a thread for each costs
about as much as a request to a server on loopback (the caller waits until the thread runs), so
the threads are made once per process and kept; a forked child makes its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

#: Threads kept: work given to them never waits for other work given to them.
_WORKERS = 4

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def meanwhile(fn: Callable[[], T]) -> Future[T]:
    """Run ``fn`` on a kept thread; its result (or exception) is in the future returned."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="tensorcas-meanwhile")
        return _pool.submit(fn)


def _forget_pool_in_child() -> None:
    """A forked child has none of its parent's threads: an inherited pool would queue work that
    never runs."""
    global _pool, _lock
    _pool = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)
