"""The rule gc follows to collect a pack, shared with ``du`` so that what ``du`` reports as freed
by gc is what gc frees."""

from __future__ import annotations

from .. import format as fmt


def pack_use(
    places: list[fmt.PackedBlob], size: int, referenced: set[str], loose: set[str]
) -> tuple[dict[str, fmt.PackedBlob], dict[str, int]]:
    """The blobs of one pack still in use (first place of each) and the unused ones (digest ->
    bytes).  Places past the pack's end are ignored; an unused blob that also has a loose copy
    is counted with the loose blobs, not here."""
    live: dict[str, fmt.PackedBlob] = {}
    unused: dict[str, int] = {}
    for packed in places:
        if packed.offset + packed.nbytes > size:
            continue
        if packed.blob in referenced:
            live.setdefault(packed.blob, packed)
        elif packed.blob not in loose:
            unused[packed.blob] = packed.nbytes
    return live, unused


def pack_is_collectible(
    *, sealed: bool, size: int, live_bytes: int, mtime: float, cutoff: float
) -> bool:
    """Whether gc deletes a pack (after copying its live blobs): its writer sealed it, nothing
    touched it since ``cutoff``, and at least half its bytes are unused, so that a gc never
    copies much to free little."""
    mostly_unused = size > live_bytes and 2 * (size - live_bytes) >= size
    return sealed and mtime <= cutoff and mostly_unused
