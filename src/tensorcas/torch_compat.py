"""Make PyTorch's repro tooling keep its inputs in tensorcas: the switch, and what it swaps in.

PyTorch's repro and minifier scripts (``torch._dynamo.repro.after_aot``, ``minifier_launcher.py``,
``--save-dir``) save a failing graph's real inputs with ``torch.utils._content_store`` through
``torch._dynamo.debug_utils.InputWriter`` and load them with ``InputReader``.  :func:`install`
puts tensorcas in that store's place, in this process::

    import tensorcas.torch_compat
    tensorcas.torch_compat.install()          # or: with tensorcas.torch_compat.install(): ...

``tensorcas repro SCRIPT [ARGS...]`` runs a generated script with the switch in place
(:func:`run_script`).  Scripts generated while the switch is in place begin with a line that puts
it in place again, so they also run as plain ``python SCRIPT``.  A tensorcas store that this
module writes holds a small file named ``storages`` (:data:`GUARD_KEY`): PyTorch's own reader,
run against it without the switch, then stops with ``NotADirectoryError`` on
``<save_dir>/storages/...`` instead of silently replacing every input with random data.

What still differs from PyTorch's store, and why, is listed in docs/pytorch.md.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TextIO

import torch

from . import format as fmt
from .backends.local import LocalBackend
from .errors import FormatError, StoreNotFoundError
from .hashing import hash_storage
from .reader import ContentStoreReader as _Reader
from .reader import DeviceLike, TensorMetadata
from .store import Location, Store
from .writer import ContentStoreWriter as _Writer

#: The file a tensorcas store written for PyTorch's tooling holds where PyTorch's store keeps its
#: ``storages/`` directory.  Never read by tensorcas; its text is for a person who finds it.
GUARD_KEY = "storages"
GUARD_TEXT = (
    b"This directory is a tensorcas store, not a torch.utils._content_store directory.\n"
    b"A PyTorch repro script that names it as its save_dir must run with tensorcas in place:\n"
    b"    tensorcas repro SCRIPT [ARGS...]\n"
    b"or call tensorcas.torch_compat.install() before run_repro.  Without it PyTorch's reader\n"
    b"stops here (NotADirectoryError) rather than replacing every input with random data.\n"
)

#: The line put at the top of repro scripts generated while the switch is in place.
SWITCH_LINE = "import tensorcas.torch_compat; tensorcas.torch_compat.install()  # inputs are in a tensorcas store\n"


def write_guard(store: Store) -> None:
    """Put the ``storages`` guard file into a local store (other backends need none: PyTorch's
    reader reads only local paths).  Idempotent; a ``storages`` directory is left alone."""
    backend = store.backend
    if not isinstance(backend, LocalBackend):
        return
    if os.path.lexists(os.path.join(backend.root, GUARD_KEY)):
        return
    backend.put_if_absent(GUARD_KEY, GUARD_TEXT)


class ContentStoreWriter(_Writer):
    """:class:`tensorcas.ContentStoreWriter` as PyTorch's tooling creates it:
    ``ContentStoreWriter(save_dir, stable_hash=False)``.

    Like PyTorch's store, it makes its store in any directory PyTorch's tooling names, even one
    holding other files: after_aot writes ``checkpoints/N.py`` and then names ``checkpoints`` as
    its ``save_dir``; inductor's trace saves real inputs into its debug directory.  It refuses only
    a directory that holds a PyTorch store.  Each store it opens gets the ``storages`` guard.
    """

    def __init__(self, loc: Location, stable_hash: bool = False, **kwargs: Any) -> None:
        _adopt_directory(loc)
        super().__init__(loc, stable_hash, **kwargs)
        write_guard(self.store)


def _adopt_directory(loc: Location) -> None:
    """Create the store's marker in an existing directory that holds other files."""
    if not isinstance(loc, (str, os.PathLike)) or "://" in os.fspath(loc):
        return
    root = os.path.abspath(os.fspath(loc))
    try:
        entries = os.listdir(root)
    except OSError:
        return  # missing: the writer creates it; unreadable: the writer reports it
    if fmt.META_KEY in entries or not any(not e.startswith(".") for e in entries):
        return
    if any(os.path.isdir(os.path.join(root, e)) for e in ("storages", "tensors")):
        raise FormatError(
            f"{root} holds a PyTorch content store (storages/ or tensors/); tensorcas does not "
            f"write into it.  Import it with 'tensorcas import NEW_STORE {root}', or use another "
            "save_dir"
        )
    LocalBackend(root).put_if_absent(fmt.META_KEY, fmt.encode_meta())


class ContentStoreReader:
    """:class:`tensorcas.ContentStoreReader` as PyTorch's tooling uses it.

    PyTorch's reader opens nothing in its constructor, and ``InputReader`` creates one outside
    the ``try`` that turns a ``FileNotFoundError`` into random data.  This one opens the store on
    first use, so a missing ``save_dir`` raises :class:`tensorcas.StoreNotFoundError` (a
    ``FileNotFoundError``) where PyTorch's raises ``FileNotFoundError``: at the first read.

    ``device``, when ``read_storage`` is not given one, is the device ``InputReader`` asked for
    (PyTorch's store remembers each storage's device; a tensorcas blob is only bytes).
    """

    def __init__(
        self, loc: Location, *, cache: bool = True, verify: bool = False, mmap: bool = False
    ) -> None:
        self._loc = loc
        self._options = {"cache": cache, "verify": verify, "mmap": mmap}
        self._reader: _Reader | None = None
        self._local = threading.local()
        try:
            self._open()
        except StoreNotFoundError:
            pass  # raised again on first use, as PyTorch's reader would

    def _open(self) -> _Reader:
        if self._reader is None:
            self._reader = _Reader(self._loc, **self._options)
        return self._reader

    @property
    def location(self) -> str:
        return self._open().location

    def read_storage(self, h: str, *, device: DeviceLike = None) -> torch.UntypedStorage:
        if device is None:
            device = getattr(self._local, "device", None)
        return self._open().read_storage(h, device=device)

    def read_tensor(self, name: str, *, device: DeviceLike = None) -> torch.Tensor:
        return self._open().read_tensor(name, device=device)

    def read_tensor_metadata(self, name: str) -> TensorMetadata:
        return self._open().read_tensor_metadata(name)

    def list_tensors(self, prefix: str = "") -> list[str]:
        return self._open().list_tensors(prefix)

    def refresh(self) -> None:
        self._open().refresh()

    def __contains__(self, name: str) -> bool:
        return name in self._open()

    def __repr__(self) -> str:
        return f"tensorcas.torch_compat.ContentStoreReader({self._loc!r})"


# -----------------------------------------------------------------------------------------------
# the switch

#: (module, attribute, replacement) for everything the switch swaps.
_SWAPS: tuple[tuple[str, str, object], ...] = (
    ("torch.utils._content_store", "ContentStoreWriter", ContentStoreWriter),
    ("torch.utils._content_store", "ContentStoreReader", ContentStoreReader),
    ("torch.utils._content_store", "hash_storage", hash_storage),
    ("torch._dynamo.debug_utils", "ContentStoreWriter", ContentStoreWriter),
    ("torch._dynamo.debug_utils", "ContentStoreReader", ContentStoreReader),
    ("torch._functorch.fx_minifier", "ContentStoreWriter", ContentStoreWriter),
    ("torch._prims.debug_prims", "ContentStoreReader", ContentStoreReader),
)

_lock = threading.RLock()
_saved: list[tuple[Any, str, object]] = []  # what the outermost install() replaced
_active: set[int] = set()  # ids of the handles whose install() is in effect
_next_id = 0


class Installed:
    """What :func:`install` returns: the switch is in place; as a context manager, the block's
    end (or :meth:`uninstall`) puts PyTorch's store back if no other install is in effect."""

    def __init__(self, ident: int) -> None:
        self._id = ident

    def uninstall(self) -> None:
        with _lock:
            if self._id in _active:
                _active.discard(self._id)
                if not _active:
                    _restore()

    def __enter__(self) -> Installed:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()


def install() -> Installed:
    """Make PyTorch's repro tooling read and write tensorcas stores, in this process.

    Swaps tensorcas's reader and writer into ``torch.utils._content_store`` and into the modules
    that imported them (``torch._dynamo.debug_utils``, ``torch._functorch.fx_minifier``,
    ``torch._prims.debug_prims``); makes ``InputReader`` load each storage onto the device the
    script names; and makes repro scripts generated meanwhile begin with :data:`SWITCH_LINE`.
    Calls nest; the switch stays until every returned handle is uninstalled (or its ``with``
    block ends) or :func:`uninstall` is called, else for the rest of the process.
    """
    global _next_id
    with _lock:
        if not _active:
            swaps: list[tuple[Any, str, object]] = [
                (importlib.import_module(name), attribute, value)
                for name, attribute, value in _SWAPS
            ]
            debug_utils = importlib.import_module("torch._dynamo.debug_utils")
            after_aot = importlib.import_module("torch._dynamo.repro.after_aot")
            input_reader = debug_utils.InputReader
            swaps.append((input_reader, "storage", _on_device(input_reader.storage)))
            swaps.append(
                (after_aot, "save_graph_repro", _with_switch_line(after_aot.save_graph_repro))
            )
            for module, attribute, value in swaps:
                _saved.append((module, attribute, getattr(module, attribute)))
                setattr(module, attribute, value)
        _next_id += 1
        _active.add(_next_id)
        return Installed(_next_id)


def uninstall() -> None:
    """Put PyTorch's own store back now, however many installs are in effect."""
    with _lock:
        _active.clear()
        _restore()


def installed() -> bool:
    """Whether the switch is in place."""
    return bool(_active)


def _restore() -> None:
    for module, attribute, original in reversed(_saved):
        setattr(module, attribute, original)
    _saved.clear()


def _on_device(storage: Callable[..., torch.UntypedStorage]) -> Callable[..., torch.UntypedStorage]:
    """``InputReader.storage`` that passes the device it was asked for to a tensorcas reader."""

    def storage_on_device(
        self: Any, storage_hash: str | None, nbytes: int, **kwargs: Any
    ) -> torch.UntypedStorage:
        store = getattr(self, "store", None)
        if not isinstance(store, ContentStoreReader):
            return storage(self, storage_hash, nbytes, **kwargs)
        device = kwargs.get("device")
        store._local.device = torch.device("cpu") if device is None else torch.device(device)
        try:
            return storage(self, storage_hash, nbytes, **kwargs)
        finally:
            store._local.device = None

    storage_on_device.__wrapped__ = storage  # type: ignore[attr-defined]
    return storage_on_device


def _with_switch_line(save: Callable[..., None]) -> Callable[..., None]:
    """``save_graph_repro`` whose scripts with a ``save_dir`` begin with :data:`SWITCH_LINE`."""

    def save_graph_repro(fd: TextIO, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("save_dir") is not None:
            fd.write(SWITCH_LINE)
        save(fd, *args, **kwargs)

    save_graph_repro.__wrapped__ = save  # type: ignore[attr-defined]
    return save_graph_repro


# -----------------------------------------------------------------------------------------------
# running a generated script


def run_script(path: str | os.PathLike[str], args: Sequence[str] = ()) -> None:
    """Run a repro script as ``python SCRIPT ARGS...`` would, with the switch in place.

    ``sys.argv`` and ``sys.path[0]`` are the script's for the run and restored after it; a
    ``SystemExit`` raised by the script propagates.
    """
    script = os.path.abspath(os.fspath(path))
    if not os.path.isfile(script):
        raise FileNotFoundError(f"no repro script at {script}")
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(script))
    with _lock:
        before = set(_active)
    try:
        install()
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        with _lock:  # also drop the installs the script made itself (its first line)
            _active.intersection_update(before)
            if not _active:
                _restore()
