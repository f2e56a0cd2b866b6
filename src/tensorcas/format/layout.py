"""Where things live in a store: the one place that turns a digest or an id into a key and back.

A store is a flat space of ``/``-separated keys::

    tensorcas.json              the marker (format and version)
    blobs/ab/cdef...            a blob, under the 64 hex digits of its digest split 2 + 62
    packs/<pack id>.pack        an append-only file of small blobs, written by one writer
    logs/<writer id>.log        an append-only log of records, one per writer

Every function that builds a key validates what it builds it from, and every function that reads
a key back (``key_to_digest``, ``is_pack_key``, ``is_log_key``) rejects what does not fit, so a
name planted in a hostile store never becomes a key the store acts on.
"""

from __future__ import annotations

import re

from ..errors import InvalidDigestError, InvalidKeyError

DIGEST_ALGORITHM = "blake3"

META_KEY = "tensorcas.json"
BLOBS = "blobs"
PACKS = "packs"
LOGS = "logs"
#: The top-level entries a store consists of.
TOP_LEVEL = (META_KEY, BLOBS, PACKS, LOGS)

DIGEST_RE = re.compile(r"blake3:[0-9a-f]{64}\Z")
_HEX_RE = re.compile(r"[0-9a-f]{64}\Z")
#: Writer and pack ids: short, lowercase, safe as a file name on every filesystem.
ID_RE = re.compile(r"[0-9a-z][0-9a-z._-]{0,127}\Z")


def parse_digest(digest: object) -> str:
    """Return the 64 hex digits of a ``blake3:<hex>`` digest (bare hex is accepted too)."""
    if isinstance(digest, str):
        if DIGEST_RE.match(digest):
            return digest[7:]
        if _HEX_RE.match(digest):
            return digest
    raise InvalidDigestError(
        f"{digest!r} is not a digest; expected 'blake3:' followed by 64 lowercase hex digits"
    )


def format_digest(hex_digest: str) -> str:
    """``blake3:<hex>`` for 64 hex digits."""
    return f"{DIGEST_ALGORITHM}:{hex_digest}"


def is_digest(value: object) -> bool:
    """Whether ``value`` is a digest in its stored form, ``blake3:`` and 64 lowercase hex digits."""
    return isinstance(value, str) and DIGEST_RE.match(value) is not None


def is_id(value: object) -> bool:
    """Whether ``value`` is a valid writer or pack id."""
    return isinstance(value, str) and ID_RE.match(value) is not None


#: A foreign digest kept as an alias: ``<scheme>:<hex>``, e.g. ``torch:<sha1 hex>``.
_ALIAS_RE = re.compile(r"[a-z][a-z0-9]{0,15}:[0-9a-f]{1,128}\Z")
MAX_ALIASES = 16


def validate_alias(alias: object) -> str:
    """An alias (``torch:<hex>``) checked for form; ``InvalidDigestError`` otherwise."""
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias):
        raise InvalidDigestError(
            f"invalid digest alias {alias!r}: expected '<scheme>:<lowercase hex>', such as 'torch:<sha1 hex>'"
        )
    return alias


def is_alias(value: object) -> bool:
    return isinstance(value, str) and _ALIAS_RE.match(value) is not None


def blob_key(digest: str) -> str:
    """The key of a loose blob: ``blobs/<first two hex digits>/<other 62>``."""
    hex_digest = parse_digest(digest)
    return f"{BLOBS}/{hex_digest[:2]}/{hex_digest[2:]}"


def key_to_digest(key: str) -> str | None:
    """The digest a blob key stands for, or ``None`` if the key is not a blob's."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != BLOBS or len(parts[1]) != 2:
        return None
    hex_digest = parts[1] + parts[2]
    return format_digest(hex_digest) if _HEX_RE.match(hex_digest) else None


def pack_key(pack_id: str) -> str:
    """The key of a pack: an append-only file of small blobs written by one writer."""
    if not ID_RE.match(pack_id):
        raise InvalidKeyError(f"invalid pack id {pack_id!r}; expected lowercase letters, digits, '.', '_', '-'")
    return f"{PACKS}/{pack_id}.pack"


def is_pack_key(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 2 and parts[0] == PACKS and parts[1].endswith(".pack") and bool(ID_RE.match(parts[1][:-5]))


def log_key(writer_id: str) -> str:
    """The key of a writer's log."""
    if not ID_RE.match(writer_id):
        raise InvalidKeyError(f"invalid writer id {writer_id!r}; expected lowercase letters, digits, '.', '_', '-'")
    return f"{LOGS}/{writer_id}.log"


def is_log_key(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 2 and parts[0] == LOGS and parts[1].endswith(".log") and bool(ID_RE.match(parts[1][:-4]))
