"""Field checks shared by the manifest's decoders: each raises :class:`Invalid`, which
``decode_manifest`` turns into a ``CorruptObjectError`` naming the checkpoint."""

from __future__ import annotations

from typing import Any

from .. import format as fmt

#: A state-dict key (fqn) longer than this is refused (DCP's keys are dotted module paths).
MAX_FQN_BYTES = 4096


class Invalid(Exception):
    """A field of a manifest failed validation."""


def checked_fqn(fqn: object) -> str:
    if not isinstance(fqn, str):
        raise Invalid("keys must be strings")
    try:
        if len(fqn.encode("utf-8")) > MAX_FQN_BYTES:
            raise Invalid(f"key {fqn[:100]!r}... is longer than {MAX_FQN_BYTES} bytes")
    except UnicodeEncodeError:
        raise Invalid(f"key {fqn[:100]!r} is not valid Unicode") from None
    return fqn


def exact_keys(raw: Any, what: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict) or set(raw) != keys:
        got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise Invalid(f"{what} must be an object with exactly the keys {sorted(keys)}, not {got}")
    return raw


def list_of(raw: Any, what: str) -> list[Any]:
    if not isinstance(raw, list):
        raise Invalid(f"{what} must be a list")
    return raw


def integer(raw: Any, what: str) -> int:
    if type(raw) is not int or not 0 <= raw <= fmt.MAX_INT:
        raise Invalid(f"{what} must be an integer in [0, 2**63 - 1], not {raw!r}"[:300])
    return raw


def integers(raw: Any, what: str) -> tuple[int, ...]:
    items = list_of(raw, what)
    if len(items) > fmt.MAX_NDIM:
        raise Invalid(f"{what} has more than {fmt.MAX_NDIM} entries")
    return tuple(integer(x, what) for x in items)
