"""Checkpoints from one process, without ``torch.distributed``: ``save_state_dict`` and
``load_state_dict``.

Saving goes through DCP in its single-process mode, so a checkpoint saved here is the same as one
saved by a distributed job (and loads there, resharded).  Loading needs no DCP and no target
state dict: the manifest says every tensor's global size and every value, and where each key
sat in the nested state dict.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import torch

from ..errors import CheckpointError, CheckpointNotFoundError, CorruptObjectError
from ..store import Location
from . import catalog
from .manifest import Manifest, PathElement, TensorEntry, ValueEntry


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
    if manifest.paths is None:
        return flat
    return _unflatten(flat, manifest)


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


def _unflatten(flat: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
    """Put each value back where DCP found it: ``("optim", "param_groups", 0, "lr")`` is
    ``out["optim"]["param_groups"][0]["lr"]``.  Lists are padded with ``None`` as DCP does; the
    padding is bounded, so a hostile path cannot make a list of a billion entries."""
    assert manifest.paths is not None
    builder = _Builder(2 * len(flat) + 1024)
    for fqn, value in flat.items():
        builder.put(manifest.paths[fqn], value, fqn)
    return builder.root


class _Builder:
    def __init__(self, padding: int) -> None:
        self.root: dict[str, Any] = {}
        self.padding = padding  # how many list slots may still be made up

    def put(self, path: tuple[PathElement, ...], value: Any, fqn: str) -> None:
        node: Any = self.root
        for key, next_key in itertools.pairwise(path):
            empty: Any = [] if isinstance(next_key, int) else {}
            self._slot(node, key, fqn)
            child = node.setdefault(key, empty) if isinstance(node, dict) else node[key]
            if child is None:
                child = node[key] = empty
            if type(child) is not type(empty):
                raise _bad_path(fqn)
            node = child
        key = path[-1]
        self._slot(node, key, fqn)
        if (node.get(key) if isinstance(node, dict) else node[key]) is not None:
            raise _bad_path(fqn)
        node[key] = value

    def _slot(self, node: Any, key: PathElement, fqn: str) -> None:
        """Check that ``key`` fits ``node`` (a str for a dict, an index for a list), growing a
        list to hold the index."""
        if isinstance(node, dict) and isinstance(key, str):
            return
        if not (isinstance(node, list) and isinstance(key, int)):
            raise _bad_path(fqn)
        missing = key + 1 - len(node)
        if missing > 0:
            if missing > self.padding:
                raise CorruptObjectError(
                    f"the path of {fqn!r} has a list index ({key}) far beyond the entries saved"
                )
            node.extend([None] * missing)
            self.padding -= missing


def _bad_path(fqn: str) -> CorruptObjectError:
    return CorruptObjectError(
        f"the path of {fqn!r} clashes with another key's (one is inside the other)"
    )
