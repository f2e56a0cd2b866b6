"""Byte-level backends: where a store's objects live (see ``base`` for the contract)."""

from __future__ import annotations

from .base import (
    Appender,
    Appending,
    Backend,
    Copying,
    Grace,
    Leftover,
    LocalPaths,
    ObjectInfo,
    Staged,
    Staging,
    appending,
    copying,
    grace,
    local_paths,
    staging,
)
from .local import LocalBackend
from .memory import MemoryBackend
from .objectstore import ObjectStoreBackend
from .readonly import ReadOnlyBackend, read_only

__all__ = [
    "Appender",
    "Appending",
    "Backend",
    "Copying",
    "Grace",
    "Leftover",
    "LocalBackend",
    "LocalPaths",
    "MemoryBackend",
    "ObjectInfo",
    "ObjectStoreBackend",
    "ReadOnlyBackend",
    "Staged",
    "Staging",
    "appending",
    "copying",
    "grace",
    "local_paths",
    "read_only",
    "staging",
]
