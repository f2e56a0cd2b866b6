"""``export_safetensors`` and ``import_store``: move tensors between tensorcas and other formats.

Export writes one safetensors file.  safetensors holds each tensor as its own contiguous bytes and
refuses tensors that share memory, so views of one blob are exported as separate contiguous
copies: the values survive, the sharing does not, and the report lists the tensors concerned.

Import reads a safetensors file, or a directory written by PyTorch's
``torch.utils._content_store.ContentStoreWriter`` (``storages/<hash>`` and ``tensors/<name>``, both
written with ``torch.save``).  Every storage of such a directory is kept as a storage root with its
PyTorch digest (SHA-1 or fast hash) as an alias, so a repro script's ``load_args``, which names
storages by that digest, reads them from the imported store (through ``tensorcas.torch_compat``);
a repro ``save_dir`` holds only ``storages/``.  That directory format is pickle-based; it is read here with
``torch.load(weights_only=True)`` only, which refuses arbitrary objects, and only because the user
asked for the conversion.  No tensorcas store is ever read that way.  Every name is checked before
anything is written, and every view is checked against its storage's size before torch sees it.

``safetensors`` is imported only when one of these functions needs it.
"""

from __future__ import annotations

import os
import re
import stat
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import format as fmt
from ..errors import ExportError, ImportSourceError, StoreError, StoreIOError, TensorNotFoundError
from ..reader import ContentStoreReader
from ..store import Location, Store
from ..torch_compat import write_guard
from ..writer import ContentStoreWriter
from ._common import Progress, check_walkable, format_nbytes, open_store

# -----------------------------------------------------------------------------------------------
# export


@dataclass
class ExportReport:
    location: str
    out: str
    tensors: int = 0
    nbytes: int = 0
    copied_shared: list[str] = field(default_factory=list)  # views of a shared blob, now copies
    made_contiguous: list[str] = field(default_factory=list)  # strided views, now contiguous
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def export_safetensors(
    loc: Location | Store,
    out: str | os.PathLike[str],
    prefix: str = "",
    *,
    strip_prefix: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the tensors under ``prefix`` to the safetensors file ``out``.

    Keys are the tensor names, or with ``strip_prefix`` the names relative to ``prefix`` (ready
    for ``load_state_dict``).  The file appears whole or not at all (written beside ``out``, then
    renamed); an existing ``out`` is replaced only with ``overwrite``.  ``requires_grad`` is not
    kept: safetensors has no place for it.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    store = open_store(loc, read_only=True)
    out_path = os.path.abspath(os.fspath(out))
    report = ExportReport(store.location, out_path)
    records = store.records(prefix)
    if not records:
        raise TensorNotFoundError(
            f"no tensor {'below ' + repr(prefix) + ' ' if prefix else ''}in store {store.location}; nothing to export"
        )
    supported = _safetensors_dtypes()
    bad = [r for r in records if r.dtype not in supported]
    if bad:
        raise ExportError(
            f"safetensors cannot hold {bad[0].dtype} (tensor {bad[0].name!r}"
            + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
            + "); export a prefix without them, or convert them before saving"
        )
    keys = {r.name: _export_key(r.name, prefix) if strip_prefix else r.name for r in records}
    if len(set(keys.values())) != len(keys):
        raise ExportError("two tensors would get the same key with strip_prefix; export without it")
    if os.path.exists(out_path) and not overwrite:
        raise ExportError(
            f"{out_path} exists; choose another file, or pass overwrite=True to replace it"
        )
    if not os.path.isdir(os.path.dirname(out_path)):
        raise ExportError(
            f"cannot write {out_path}: directory {os.path.dirname(out_path)} does not exist"
        )

    for record in records:
        # safetensors holds every element: a view expanded far beyond its blob (a hostile record
        # can claim 2**40 elements over 4 bytes) is refused as show and diff refuse it.
        check_walkable(record)
    uses = Counter(r.blob for r in records)
    reader = ContentStoreReader(store.backend, cache=True, mmap=True)
    tensors: dict[str, torch.Tensor] = {}
    for i, record in enumerate(records):
        tensor = reader.read_tensor(record.name).detach()
        try:
            if uses[record.blob] > 1:
                tensor = tensor.clone(memory_format=torch.contiguous_format)
                report.copied_shared.append(record.name)
            elif not tensor.is_contiguous():
                tensor = tensor.contiguous()
                report.made_contiguous.append(record.name)
        except (RuntimeError, MemoryError) as exc:  # the allocation failed
            raise ExportError(
                f"tensor {record.name!r} ({format_nbytes(record.view_nbytes)} once made contiguous) "
                f"cannot be copied for export: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                "export a prefix without it, or free memory"
            ) from None
        tensors[keys[record.name]] = tensor
        report.nbytes += record.view_nbytes
        if progress is not None:
            progress(i + 1, len(records))
    report.tensors = len(tensors)
    if report.copied_shared:
        report.notes.append(
            f"{_tensors(len(report.copied_shared))} storage with others and were exported as "
            "separate contiguous copies (safetensors cannot hold shared or overlapping views): "
            + ", ".join(repr(n) for n in report.copied_shared[:20])
            + (" ..." if len(report.copied_shared) > 20 else "")
        )
    if any(r.requires_grad for r in records):
        report.notes.append("requires_grad is not kept by safetensors")

    directory, base = os.path.split(out_path)
    tmp = os.path.join(directory, f".{base}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors makes its files private; ours are ordinary
        if not overwrite and os.path.exists(out_path):
            raise ExportError(f"{out_path} appeared while exporting; nothing was replaced")
        os.replace(tmp, out_path)
    except OSError as exc:
        raise StoreIOError(f"writing {out_path} failed: {exc.strerror or exc}") from exc
    except SafetensorError as exc:
        raise ExportError(f"writing {out_path} failed: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return report


def _tensors(n: int) -> str:
    return "1 tensor shares" if n == 1 else f"{n} tensors share"


def _export_key(name: str, prefix: str) -> str:
    rest = name[len(prefix) :].lstrip("/") if prefix else name
    return rest or name.rpartition("/")[2]


def _safetensors_dtypes() -> set[str]:
    import safetensors.torch

    table = getattr(safetensors.torch, "_TYPES", None)
    if isinstance(table, dict):
        return {name for dtype in table.values() if (name := fmt.dtype_name(dtype)) is not None}
    return {
        "bool",
        "uint8",
        "int8",
        "int16",
        "int32",
        "int64",
        "float16",
        "bfloat16",
        "float32",
        "float64",
    }


# -----------------------------------------------------------------------------------------------
# import


@dataclass
class ImportReport:
    location: str
    source: str
    kind: str  # "safetensors" or "torch-content-store"
    names: list[str] = field(default_factory=list)
    nbytes: int = 0
    storages: int = 0  # storages kept as roots under their PyTorch digest (content stores)

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def import_store(
    loc: Location | Store,
    source: str | os.PathLike[str],
    prefix: str = "",
    *,
    progress: Progress | None = None,
) -> ImportReport:
    """Write every tensor of ``source`` into the store at ``loc`` (created if new).

    ``source`` is a safetensors file or a PyTorch content-store directory.  Each tensor is stored
    as ``PREFIX/NAME`` (``prefix`` ``'run1'`` or ``'run1/'`` give ``run1/NAME``); an existing tensor
    of that name is replaced.  Tensors that shared a storage in the source share a blob here.
    Every storage of a content-store directory (a repro ``save_dir`` holds nothing else) is also
    kept as a storage root, found by its PyTorch digest: ``read_storage("<sha1 hex>")``.
    """
    src = os.path.abspath(os.fspath(source))
    if prefix:
        fmt.validate_prefix(prefix)
        if not prefix.endswith("/"):
            prefix += "/"
    try:
        st = os.stat(src)
    except OSError as exc:
        raise ImportSourceError(
            f"cannot read {src}: {exc.strerror}; give a safetensors file or a directory"
        ) from None
    target = loc.backend if isinstance(loc, Store) else loc
    if stat.S_ISDIR(st.st_mode):
        return _import_torch_store(target, src, prefix, progress)
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or device would block the reader (or never end): refuse it before opening.
        raise ImportSourceError(
            f"{src} is not a regular file or a directory; give a safetensors file or a directory"
        )
    return _import_safetensors(target, src, prefix, progress)


def _import_safetensors(
    loc: Location, src: str, prefix: str, progress: Progress | None
) -> ImportReport:
    from safetensors import SafetensorError, safe_open

    report = ImportReport("", src, "safetensors")
    try:
        with safe_open(src, framework="pt") as f:
            keys = list(f.keys())
            names = [_import_name(prefix, key, src) for key in keys]
            with ContentStoreWriter(loc) as writer:
                report.location = writer.location
                for i, (key, name) in enumerate(zip(keys, names, strict=True)):
                    tensor = f.get_tensor(key)
                    writer.write_tensor(name, tensor)
                    report.names.append(name)
                    report.nbytes += tensor.numel() * tensor.element_size()
                    if progress is not None:
                        progress(i + 1, len(keys))
    except (SafetensorError, OSError) as exc:
        raise ImportSourceError(
            f"{src} is not a readable safetensors file ({exc}); give a safetensors file or a "
            "directory written by torch.utils._content_store"
        ) from None
    return report


_STORAGE_HASH = re.compile(r"[0-9a-f]{1,128}\Z")


def _import_torch_store(
    loc: Location, src: str, prefix: str, progress: Progress | None
) -> ImportReport:
    report = ImportReport("", src, "torch-content-store")
    metas = [(name, path, _load_metadata(path)) for name, path in torch_store_files(src, prefix)]
    remaining = Counter(meta[1] for _, _, meta in metas)
    storages: dict[str, torch.UntypedStorage] = {}  # kept only while a later tensor still needs it
    rooted: set[str] = set()
    alone = _storage_files(src, set(remaining))  # storages no tensor uses: a repro's inputs
    total = len(metas) + len(alone)
    with ContentStoreWriter(loc) as writer:
        report.location = writer.location
        for i, (name, path, meta) in enumerate(metas):
            h = meta[1]
            storage = storages.get(h)
            if storage is None:
                storage = _load_storage(src, h, path)
                storages[h] = storage
            if h not in rooted:
                writer.write_storage(storage, alias=h)
                rooted.add(h)
            remaining[h] -= 1
            if remaining[h] == 0:
                del storages[h]
            tensor = torch_store_view(path, meta, storage)
            writer.write_tensor(name, tensor)
            report.names.append(name)
            report.nbytes += tensor.numel() * tensor.element_size()
            if progress is not None:
                progress(i + 1, total)
        for j, h in enumerate(alone):
            storage = _load_storage(src, h, os.path.join(src, "storages"))
            writer.write_storage(storage, alias=h)
            report.nbytes += storage.nbytes()
            if progress is not None:
                progress(len(metas) + j + 1, total)
        report.storages = len(rooted) + len(alone)
        write_guard(writer.store)
    return report


def torch_store_files(src: str, prefix: str = "") -> list[tuple[str, str]]:
    """``(name, path)`` of every tensor file of the PyTorch content store ``src``, in writing
    order (the files' modification times, then names); names are checked, symlinks refused."""
    tensors_dir = os.path.join(src, "tensors")
    # Inside the source, nothing is followed: its two directories are checked like its files.
    present = [sub for sub in ("storages", "tensors") if os.path.lexists(os.path.join(src, sub))]
    for sub in present:
        _regular(os.path.join(src, sub), directory=True)
    if not present:
        raise ImportSourceError(
            f"{src} is a directory without 'tensors/' or 'storages/': not a PyTorch content store "
            "(to copy a tensorcas store, use 'tensorcas cp SOURCE TARGET')"
        )
    files: list[tuple[int, str, str]] = []  # (mtime, name, path)
    walked = os.walk(tensors_dir, onerror=_walk_error) if "tensors" in present else ()
    for dirpath, dirs, filenames in walked:
        for d in dirs:
            _regular(os.path.join(dirpath, d), directory=True)
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            st = _regular(path)
            rel = os.path.relpath(path, tensors_dir).replace(os.sep, "/")
            files.append((st.st_mtime_ns, _import_name(prefix, rel, src), path))
    files.sort()
    return [(name, path) for _, name, path in files]


def torch_store_view(
    path: str,
    meta: tuple[torch.dtype, str, int, tuple[int, ...], tuple[int, ...], dict[str, Any]],
    storage: torch.UntypedStorage,
) -> torch.Tensor:
    """The tensor a content-store metadata file describes, as a view of ``storage``, after
    checking that the view fits in it."""
    dtype, h, offset, shape, stride, extra = meta
    need = fmt.required_nbytes(fmt.DTYPE_NAMES[dtype], shape, stride, offset)
    if need > storage.nbytes():
        raise ImportSourceError(
            f"{path}: the view (shape {list(shape)}, stride {list(stride)}, offset {offset}) needs "
            f"{need} bytes but storage {h} has {storage.nbytes()}; the source is damaged"
        )
    tensor = torch.empty(0, dtype=dtype).set_(storage, offset, shape, stride)
    if extra:
        try:
            torch._utils.set_tensor_metadata(tensor, extra)  # conj/neg bits and the like
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ImportSourceError(
                f"{path}: tensor metadata {extra!r} cannot be applied ({exc})"
            ) from None
    return tensor


def _storage_files(src: str, used: set[str]) -> list[str]:
    """The digests of ``src/storages/*`` that no tensor uses, in name order.  A file whose name is
    not a hex digest is not a storage PyTorch wrote: it is refused, as is a symlink."""
    directory = os.path.join(src, "storages")
    if not os.path.isdir(directory):
        return []
    _regular(directory, directory=True)
    out = []
    for entry in sorted(os.listdir(directory)):
        if not _STORAGE_HASH.match(entry):
            raise ImportSourceError(
                f"{os.path.join(directory, entry)} is not named by a storage digest (hex); "
                "not a PyTorch content store, or one with foreign files in it"
            )
        if entry not in used:
            out.append(entry)
    return out


def _import_name(prefix: str, key: str, src: str) -> str:
    name = prefix + key
    try:
        return fmt.validate_name(name)
    except StoreError as exc:
        raise ImportSourceError(
            f"{src}: tensor {key!r} cannot be imported under name {name!r}: {exc}"
        ) from None


def _walk_error(exc: OSError) -> None:
    """A directory of the source that cannot be listed (too deep for a path, unreadable) would
    silently lose its tensors: refuse the import instead."""
    raise ImportSourceError(
        f"cannot list {_short(str(exc.filename))}: {exc.strerror}; the source is damaged or unreadable"
    )


def _short(path: str) -> str:
    return path[:200] + ("..." if len(path) > 200 else "")


def _regular(path: str, *, directory: bool = False) -> os.stat_result:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:  # a path too long for the system, a directory that cannot be searched
        raise ImportSourceError(
            f"cannot list {_short(path)}: {exc.strerror}; the source is damaged or unreadable"
        ) from None
    ok = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    if not ok:
        raise ImportSourceError(
            f"{path} is a symlink or special file; tensorcas does not follow those"
        )
    return st


def _torch_load(path: str) -> Any:
    """``torch.load`` restricted to tensors, storages and plain data (``weights_only=True``), of
    the regular file at ``path`` itself: opened without following a link or waiting on a FIFO."""
    try:
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except OSError as exc:
        raise ImportSourceError(
            f"cannot open {path}: {exc.strerror}; tensorcas does not follow symlinks in a source"
        ) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ImportSourceError(
                f"{path} is not a regular file; tensorcas does not read special files"
            )
        return _torch_load_file(f, path)


def _torch_load_file(f: Any, path: str) -> Any:
    try:
        return torch.load(f, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises many kinds for a damaged or hostile file
        raise ImportSourceError(
            f"{path} cannot be loaded with torch.load(weights_only=True): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None


def _load_metadata(
    path: str,
) -> tuple[torch.dtype, str, int, tuple[int, ...], tuple[int, ...], dict[str, Any]]:
    """The (dtype, storage hash, offset, shape, stride, extra) a content-store tensor file holds,
    each checked for type and range."""
    meta = _torch_load(path)
    if not isinstance(meta, tuple) or len(meta) not in (5, 6):
        raise ImportSourceError(f"{path} does not hold content-store tensor metadata")
    dtype, h, offset, shape, stride = meta[:5]
    extra = meta[5] if len(meta) == 6 else {}
    if not isinstance(dtype, torch.dtype) or fmt.dtype_name(dtype) is None:
        raise ImportSourceError(f"{path}: dtype {dtype!r} cannot be stored in tensorcas")
    if not isinstance(h, str) or not _STORAGE_HASH.match(h):
        raise ImportSourceError(f"{path}: storage hash {h!r} is not a hex string")

    def ints(value: object, what: str) -> tuple[int, ...]:
        if not isinstance(value, (tuple, list)) or len(value) > fmt.MAX_NDIM:
            raise ImportSourceError(f"{path}: {what} {value!r} is not a sequence of integers")
        for v in value:
            if type(v) is not int or not 0 <= v <= fmt.MAX_INT:
                raise ImportSourceError(
                    f"{path}: {what} holds {v!r}; expected non-negative integers"
                )
        return tuple(value)

    shape_t, stride_t = ints(shape, "shape"), ints(stride, "stride")
    if len(shape_t) != len(stride_t):
        raise ImportSourceError(f"{path}: shape {shape_t} and stride {stride_t} differ in length")
    if type(offset) is not int or not 0 <= offset <= fmt.MAX_INT:
        raise ImportSourceError(f"{path}: storage offset {offset!r} is not a non-negative integer")
    if not isinstance(extra, dict):
        raise ImportSourceError(f"{path}: tensor metadata {extra!r} is not a dict")
    return dtype, h, offset, shape_t, stride_t, extra


def _load_storage(src: str, h: str, user: str) -> torch.UntypedStorage:
    path = os.path.join(src, "storages", h)
    try:
        _regular(path)
    except FileNotFoundError:
        raise ImportSourceError(
            f"{user} uses storage {h}, which is missing from {src}/storages"
        ) from None
    obj = _torch_load(path)
    if isinstance(obj, torch.TypedStorage):
        obj = obj._untyped_storage
    if not isinstance(obj, torch.UntypedStorage):
        raise ImportSourceError(f"{path} does not hold a storage but a {type(obj).__name__}")
    return obj


def _umask() -> int:
    """The process's file mode creation mask, read without changing it where Linux tells it."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then put it back at once
    os.umask(mask)
    return mask
