"""DCP's metadata and tensorcas's manifest, one into the other.

DCP hands the coordinator a ``Metadata`` (every key's dtype, size and chunks) and every rank's
``WriteResult``s; the manifest keeps what loading needs of both, as JSON.  Loading turns the
manifest back into the ``Metadata`` DCP plans with, its ``storage_data`` pointing each chunk at
its tensor name.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)

from .. import format as fmt
from ..errors import CheckpointError
from .manifest import Chunk, Entry, Manifest, TensorEntry, ValueEntry
from .paths import PathElement


@dataclasses.dataclass(frozen=True)
class ChunkResult:
    """What a rank reports for one tensor chunk it wrote."""

    name: str
    blob: str
    nbytes: int


@dataclasses.dataclass(frozen=True)
class ValueResult:
    """What a rank reports for one non-tensor value: the value, encoded (it is not written)."""

    encoded: Any


def manifest_from_metadata(
    checkpoint: str, save_id: str, metadata: Metadata, by_index: dict[MetadataIndex, Any]
) -> Manifest:
    entries: dict[str, Entry] = {}
    for fqn, md in metadata.state_dict_metadata.items():
        if isinstance(md, BytesStorageMetadata):
            result = by_index.get(MetadataIndex(fqn))
            if not isinstance(result, ValueResult):
                raise CheckpointError(f"no rank reported the value {fqn!r}; nothing was published")
            entries[fqn] = ValueEntry(result.encoded)
            continue
        dtype = fmt.dtype_name(md.properties.dtype)
        if dtype is None:
            raise CheckpointError(f"{fqn!r}: dtype {md.properties.dtype} cannot be stored")
        chunks = []
        for chunk in md.chunks:
            result = by_index.get(MetadataIndex(fqn, chunk.offsets))
            if not isinstance(result, ChunkResult):
                raise CheckpointError(
                    f"no rank reported the chunk of {fqn!r} at {list(chunk.offsets)}; nothing was published"
                )
            chunks.append(
                Chunk(
                    tuple(chunk.offsets),
                    tuple(chunk.sizes),
                    result.name,
                    result.blob,
                    result.nbytes,
                )
            )
        entries[fqn] = TensorEntry(
            dtype, tuple(md.size), bool(md.properties.requires_grad), tuple(chunks)
        )
    return Manifest(
        checkpoint=checkpoint,
        save_id=save_id,
        time_ns=time.time_ns(),
        entries=entries,
        paths=_paths(metadata.planner_data, entries),
        dcp_version=metadata.version if isinstance(metadata.version, str) else None,
        modules=tuple(metadata.storage_meta.modules) if metadata.storage_meta is not None else (),
    )


def _paths(
    planner_data: Any, entries: dict[str, Entry]
) -> dict[str, tuple[PathElement, ...]] | None:
    """DCP's default planners record where each flattened key sat in the nested state dict."""
    if planner_data is None:
        return None
    if not isinstance(planner_data, dict) or not set(entries) <= set(planner_data):
        raise CheckpointError(
            "the planner's data is not a path for every key (as DefaultSavePlanner's is); "
            "tensorcas cannot keep other planner data without pickle"
        )
    out = {}
    for fqn in entries:
        path = planner_data[fqn]
        if not isinstance(path, (tuple, list)) or not all(
            type(p) is str or (type(p) is int and p >= 0) for p in path
        ):
            raise CheckpointError(
                f"the planner's path for {fqn!r} is not a sequence of keys and indices"
            )
        out[fqn] = tuple(path)
    return out


def metadata_from_manifest(manifest: Manifest, load_id: str) -> Metadata:
    state_dict_metadata: dict[str, TensorStorageMetadata | BytesStorageMetadata] = {}
    storage_data: dict[MetadataIndex, Any] = {}
    for fqn, entry in manifest.entries.items():
        if isinstance(entry, ValueEntry):
            state_dict_metadata[fqn] = BytesStorageMetadata()
            storage_data[MetadataIndex(fqn)] = entry
            continue
        properties = TensorProperties(dtype=entry.torch_dtype, requires_grad=entry.requires_grad)
        chunks = []
        for chunk in entry.chunks:
            chunks.append(
                ChunkStorageMetadata(
                    offsets=torch.Size(chunk.offsets), sizes=torch.Size(chunk.sizes)
                )
            )
            storage_data[MetadataIndex(fqn, chunk.offsets)] = (entry.dtype, chunk)
        state_dict_metadata[fqn] = TensorStorageMetadata(properties, torch.Size(entry.size), chunks)
    return Metadata(
        state_dict_metadata=state_dict_metadata,
        planner_data=None if manifest.paths is None else dict(manifest.paths),
        storage_data=storage_data,
        storage_meta=StorageMeta(
            checkpoint_id=manifest.checkpoint,
            save_id=manifest.save_id,
            load_id=load_id,
            modules=list(manifest.modules),
        ),
        version=manifest.dcp_version,
    )
