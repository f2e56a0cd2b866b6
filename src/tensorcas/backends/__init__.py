"""Byte-level backends: where a store's objects live."""

from __future__ import annotations

from .base import Appender, Backend, ObjectInfo, Staged
from .local import LocalBackend
from .memory import MemoryBackend

__all__ = ["Appender", "Backend", "LocalBackend", "MemoryBackend", "ObjectInfo", "Staged"]
