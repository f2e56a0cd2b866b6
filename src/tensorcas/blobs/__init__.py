"""The blob layer: a digest's typed location, its bytes, and the inventory of every blob.

``Blobs`` is the one place that turns a digest into keys or bytes; ``PackIndex`` is what the logs
say about packs; ``locations`` has the typed locations (``Loose``, ``Packed``) and ``Reachable``,
the inventory gc, verify and du walk.
"""

from __future__ import annotations

from .collector import Collector
from .inventory import Inventory
from .layer import (
    PACK_THRESHOLD,
    STREAM_CHUNK,
    Blobs,
    Check,
    DigestCheck,
    PackLooks,
    tensor_context,
)
from .locations import BlobLocation, Loose, PackContents, Packed, Reachable, holds
from .packindex import PackIndex, damaged_line

__all__ = [
    "PACK_THRESHOLD",
    "STREAM_CHUNK",
    "BlobLocation",
    "Blobs",
    "Check",
    "Collector",
    "DigestCheck",
    "Inventory",
    "Loose",
    "PackContents",
    "PackIndex",
    "PackLooks",
    "Packed",
    "Reachable",
    "damaged_line",
    "holds",
    "tensor_context",
]
