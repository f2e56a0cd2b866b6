"""Deduplicated ``torch.distributed.checkpoint`` (DCP) checkpoints in a tensorcas store.

::

    import torch.distributed.checkpoint as dcp
    import tensorcas.dcp

    dcp.save(state_dict, storage_writer=tensorcas.dcp.Writer("store", "step-100"))
    dcp.load(state_dict, storage_reader=tensorcas.dcp.Reader("store", "step-100"))

Every rank writes its own shards into the one store; bytes already stored (by another rank, or
in an earlier checkpoint) are not written again.  A checkpoint is a JSON manifest published once
every rank has finished (see ``docs/checkpoints.md``); nothing is pickled.  From one process,
without torch.distributed: ``tensorcas.save_state_dict`` and ``tensorcas.load_state_dict``.

``Writer`` and ``Reader`` import ``torch.distributed.checkpoint`` (about a second) on first use,
so that ``import tensorcas`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .manifest import Manifest
from .names import validate_checkpoint_name
from .simple import load_state_dict, save_state_dict

if TYPE_CHECKING:
    from .storage import Reader, Writer

__all__ = [
    "Manifest",
    "Reader",
    "Writer",
    "load_state_dict",
    "save_state_dict",
    "validate_checkpoint_name",
]


def __getattr__(name: str) -> Any:
    if name in ("Reader", "Writer"):
        from . import storage

        return getattr(storage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
