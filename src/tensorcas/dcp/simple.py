"""Checkpoints from one process, without ``torch.distributed``: ``save_state_dict`` and
``load_state_dict``.

Saving goes through DCP in its single-process mode, so a checkpoint saved here is the same as one
saved by a distributed job (and loads there, resharded).  Loading needs no DCP and no target
state dict: the manifest says every tensor's global size and every value, and where each key
sat in the nested state dict.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..errors import CheckpointError, CheckpointNotFoundError, CorruptObjectError
from ..store import Location
from . import catalog
from .manifest import Manifest, TensorEntry, ValueEntry
from .paths import unflatten


def save_state_dict(
    loc: Location,
    name: str,
    state_dict: dict[str, Any],
    *,
    overwrite: bool = False,
    durable: bool = False,
) -> None:
    """Save ``state_dict`` (nested dicts and lists of tensors and plain values, as DCP takes
    them) as the checkpoint ``name``.  Unchanged tensors cost no new bytes.

    Raises :class:`CheckpointError` if ``name`` exists (unless ``overwrite``) or a value cannot be
    kept without pickle.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    from .storage import Writer

    writer = Writer(loc, name, overwrite=overwrite, durable=durable)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        try:
            dcp.save(state_dict, storage_writer=writer, no_dist=True)
        except CheckpointException as exc:
            raise _unwrap(exc) from None


def _unwrap(exc: BaseException) -> BaseException:
    """DCP wraps each rank's error; in one process there is one, and it is the one to raise."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and len(failures) == 1:
        inner = next(iter(failures.values()))[0]
        if isinstance(inner, Exception):
            return inner
    return CheckpointError(str(exc))


def load_state_dict(loc: Location, name: str, *, verify: bool = False) -> dict[str, Any]:
    """The state dict saved as checkpoint ``name``, nested as it was saved, on the CPU.

    Tensors saved in shards (by several ranks) are assembled whole; every tensor has storage of
    its own.  ``verify=True`` re-hashes every blob read.
    """
    manifest, flat = load_flat(loc, name, verify=verify)
    if manifest.paths is None:
        return flat
    return unflatten(flat, manifest.paths)


def load_flat(loc: Location, name: str, *, verify: bool = False) -> tuple[Manifest, dict[str, Any]]:
    """The checkpoint's manifest and its values by DCP's flattened keys (``model.layer.weight``)."""
    reader = catalog.open_reader(loc)
    if reader is None:
        raise CheckpointNotFoundError(f"no checkpoint {name!r}: there is no store at {loc}")
    reader.verify = verify
    manifest = catalog.read_manifest(reader, name)
    flat: dict[str, Any] = {}
    for fqn, entry in manifest.entries.items():
        if isinstance(entry, ValueEntry):
            flat[fqn] = entry.value()
            continue
        flat[fqn] = _assemble(reader, manifest, entry)
    return manifest, flat


def _assemble(reader: Any, manifest: Manifest, entry: TensorEntry) -> torch.Tensor:
    chunks = entry.chunks
    if len(chunks) == 1 and chunks[0].sizes == entry.size:
        return catalog.read_chunk(reader, manifest.checkpoint, entry.dtype, chunks[0])
    out = torch.empty(entry.size, dtype=entry.torch_dtype)
    covered = 0
    for chunk in chunks:
        piece = catalog.read_chunk(reader, manifest.checkpoint, entry.dtype, chunk)
        target = out
        for dim, (start, length) in enumerate(zip(chunk.offsets, chunk.sizes)):
            target = target.narrow(dim, start, length)
        target.copy_(piece)
        covered += piece.numel()
    if covered < out.numel():
        raise CorruptObjectError(
            f"checkpoint {manifest.checkpoint!r}: the chunks of a {list(entry.size)} tensor cover only "
            f"{covered} of its {out.numel()} elements"
        )
    return out
