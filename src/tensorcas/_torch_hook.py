"""Register ``torch.ops.tensorcas.load_tensor`` as soon as torch is imported, without importing it.

``import tensorcas`` must make the operator usable by code that uses torch, yet the command line
and the record-level functions (listing, disk usage, gc, verify) never need torch, whose import
takes seconds.  So the package registers the operator at once if torch is already imported, and
otherwise arranges for it to be registered right after torch's own import finishes: a one-shot
finder on ``sys.meta_path`` finds torch's module spec as the other finders would, and wraps that
spec's loader so that executing the module is followed by importing ``tensorcas.ops``.  Nothing
else about the import changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

_OPS_MODULE = "tensorcas.ops"


def register_when_torch_is_imported() -> None:
    """Import ``tensorcas.ops`` now if torch is imported, else right after torch is."""
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "library", None) is not None:
        importlib.import_module(_OPS_MODULE)
        return
    if torch is not None:
        return  # torch is being imported right now and imports us: too early to register
    if not any(isinstance(finder, _AfterTorchImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterTorchImport())


class _AfterTorchImport:
    # A finder by protocol (``find_spec``): subclassing importlib.abc.MetaPathFinder would
    # import importlib.abc, which costs more than the rest of this module.
    """Finds nothing itself; on the first import of ``torch`` it removes itself from
    ``sys.meta_path``, asks the remaining finders for torch's spec and chains the registration
    after the spec's loader executes the module."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "torch":
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        execute = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            if _OPS_MODULE not in sys.modules:
                importlib.import_module(_OPS_MODULE)

        # An attribute of this loader object only (each spec gets its own loader).
        loader.exec_module = exec_module
        return spec
