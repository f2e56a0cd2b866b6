"""Finding, reading and publishing checkpoint manifests through the public reader and writer.

A checkpoint exists when the name ``checkpoints/<checkpoint>`` holds a manifest.  Publishing it is
one ``write_tensor``, the last step of a save; removing it is one ``delete_tensor``, the first step
of a removal.  So a checkpoint is listed only while every chunk it names was written.
"""

from __future__ import annotations

import torch

from ..errors import (
    CheckpointNotFoundError,
    CorruptObjectError,
    StoreNotFoundError,
    TensorNotFoundError,
)
from ..reader import ContentStoreReader
from ..store import Location
from ..writer import ContentStoreWriter
from . import opened
from .manifest import MAX_MANIFEST_BYTES, Chunk, Manifest, decode_manifest
from .names import PREFIX, is_checkpoint_name, manifest_name


def open_reader(loc: Location, *, mmap: bool = False) -> ContentStoreReader | None:
    """A reader of the store at ``loc`` (uncached: every read is a tensor of its own), or
    ``None`` if there is no store yet.  Its store, read-only, is kept open for the next reader
    of this process (``opened``), which then reads only the log lines appended since."""
    try:
        store = opened.open_store(loc, read_only=True)
        store.refresh()
        if store.log.lost_logs:
            # A log it had read is gone: the store was removed since it was kept, perhaps made
            # again with a marker alike (object storage times it to the second).  Its records
            # are not this store's: it is opened afresh.
            opened.forget(loc)
            store = opened.open_store(loc, read_only=True)
    except StoreNotFoundError:
        return None
    return ContentStoreReader.sharing(store, cache=False, mmap=mmap)


def checkpoint_names(reader: ContentStoreReader) -> list[str]:
    """Names of the checkpoints in the store, oldest manifest first."""
    out = []
    for name in reader.list_tensors(PREFIX):
        parts = name.split("/")
        if len(parts) == 2 and is_checkpoint_name(parts[1]):
            out.append(parts[1])
    return out


def has_checkpoint(reader: ContentStoreReader, checkpoint: str) -> bool:
    return manifest_name(checkpoint) in reader


def read_manifest(reader: ContentStoreReader, checkpoint: str) -> Manifest:
    """The validated manifest of ``checkpoint``; :class:`CheckpointNotFoundError` if there is none."""
    name = manifest_name(checkpoint)
    try:
        record = reader.read_tensor_metadata(name)
    except TensorNotFoundError:
        raise CheckpointNotFoundError(
            f"no checkpoint {checkpoint!r} in store {reader.location} (a save that did not finish is "
            "not a checkpoint); list them with 'tensorcas checkpoints ls'"
        ) from None
    if record.dtype != "uint8" or len(record.shape) != 1 or record.stride != (1,):
        raise CorruptObjectError(
            f"{name!r} in {reader.location} is not a checkpoint manifest (a 1-D uint8 tensor)"
        )
    if record.view_nbytes > MAX_MANIFEST_BYTES:
        raise CorruptObjectError(
            f"manifest of checkpoint {checkpoint!r} is {record.view_nbytes} bytes; the limit is {MAX_MANIFEST_BYTES}"
        )
    data = reader.read_tensor(name).numpy().tobytes()
    return decode_manifest(data, checkpoint)


def publish_manifest(writer: ContentStoreWriter, manifest: Manifest) -> None:
    """Make ``manifest`` the checkpoint's manifest (one record, after its blob)."""
    data = bytearray(manifest.encode())
    writer.write_tensor(
        manifest_name(manifest.checkpoint), torch.frombuffer(data, dtype=torch.uint8)
    )


def check_chunks(reader: ContentStoreReader, manifest: Manifest) -> None:
    """Raise :class:`CorruptObjectError` unless every chunk name holds the blob the manifest pins."""
    for chunk in manifest.chunks():
        try:
            record = reader.store.get_record(chunk.name)
        except TensorNotFoundError:
            raise CorruptObjectError(
                f"checkpoint {manifest.checkpoint!r}: its chunk {chunk.name!r} is gone from {reader.location}"
            ) from None
        if (
            record.blob != chunk.blob
            or record.shape != chunk.sizes
            or record.nbytes != chunk.nbytes
        ):
            raise CorruptObjectError(
                f"checkpoint {manifest.checkpoint!r}: chunk {chunk.name!r} now holds blob {record.blob} "
                f"of shape {list(record.shape)}, not the manifest's {chunk.blob} of shape {list(chunk.sizes)}"
            )


def read_chunk(
    reader: ContentStoreReader, checkpoint: str, dtype: str, chunk: Chunk
) -> torch.Tensor:
    """The tensor of one chunk, after checking that its name still holds the pinned blob with the
    dtype and shape the manifest gives (a name changed since the save is an error, not new data)."""
    try:
        record = reader.read_tensor_metadata(chunk.name)
    except TensorNotFoundError:
        raise CorruptObjectError(
            f"checkpoint {checkpoint!r}: its chunk {chunk.name!r} is gone from {reader.location}; "
            "the checkpoint cannot be loaded"
        ) from None
    if (
        record.blob != chunk.blob
        or record.shape != chunk.sizes
        or record.dtype != dtype
        or record.nbytes != chunk.nbytes
    ):
        raise CorruptObjectError(
            f"checkpoint {checkpoint!r}: chunk {chunk.name!r} holds {record.dtype} {list(record.shape)} "
            f"in blob {record.blob}, not the manifest's {dtype} {list(chunk.sizes)} in {chunk.blob}"
        )
    return reader.read_tensor(chunk.name)
