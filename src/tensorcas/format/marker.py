"""The store marker, ``tensorcas.json``: what format and version a store is, read first."""

from __future__ import annotations

from ..errors import FormatError
from ._json import dumps, loads
from .layout import DIGEST_ALGORITHM

FORMAT_NAME = "tensorcas"
FORMAT_VERSION = 1
MAX_META_BYTES = 1 << 16


def encode_meta() -> bytes:
    """The marker of a new store."""
    return dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION, "digest": DIGEST_ALGORITHM}) + b"\n"


def validate_meta(data: bytes, where: str) -> None:
    """Check a store marker; raise :class:`FormatError` for anything but a version-1 store."""
    if len(data) > MAX_META_BYTES:
        raise FormatError(f"{where}: store marker is {len(data)} bytes; not a tensorcas store")
    try:
        obj = loads(data)
    except ValueError as exc:
        raise FormatError(f"{where}: store marker is not valid JSON ({exc}); not a tensorcas store") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: store marker does not say format 'tensorcas'; not a tensorcas store")
    version = obj.get("version")
    if type(version) is not int:
        raise FormatError(f"{where}: store marker has no integer version")
    if version != FORMAT_VERSION:
        raise FormatError(
            f"{where}: store format version {version} is not supported by this release "
            f"(it reads version {FORMAT_VERSION}); upgrade tensorcas to open it"
        )
    if obj.get("digest") != DIGEST_ALGORITHM:
        raise FormatError(f"{where}: store uses digest {obj.get('digest')!r}; this release supports 'blake3'")
