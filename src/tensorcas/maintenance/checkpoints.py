"""Checkpoints as things of their own: list them with their sizes, remove them, keep the last N.

A checkpoint (saved with ``tensorcas.dcp`` or ``tensorcas.save_state_dict``) is a manifest under
the name ``checkpoints/<checkpoint>`` and chunk names below it; blobs are shared by every
checkpoint (and any other name) that holds the same bytes.  So a checkpoint's size has three
parts worth knowing:

* *logical*: the bytes of its tensors, as if each were saved on its own (what DCP's filesystem
  writer would store);
* *new*: the bytes of its blobs that no earlier checkpoint uses, i.e. what saving it added;
* *shared*: the bytes of its blobs that another checkpoint uses too; removing this checkpoint
  frees at most its stored bytes minus the shared ones (``exclusive``), once ``gc`` runs.

Removing a checkpoint deletes its manifest first (it is no longer listed), then its chunk names,
as ``rm`` does: bytes are freed by ``gc``, after its grace period, and only when no other name
uses them.  Chunk names that no manifest lists (a save that was killed, or one still running) are
shown as incomplete saves and removed the same way; removing a running save's chunks makes that
save fail instead of publishing a checkpoint with chunks missing.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..dcp import catalog, opened
from ..dcp.manifest import Manifest, TensorEntry, ValueEntry
from ..dcp.names import PREFIX, chunks_prefix, is_checkpoint_name, manifest_name
from ..errors import CheckpointNotFoundError, StoreError, StoreIOError
from ..store import Location
from .transfer import ExportError, _umask


@dataclass
class CheckpointInfo:
    """One checkpoint and its sizes, in bytes."""

    name: str
    save_id: str
    time_ns: int
    tensors: int
    values: int
    chunks: int
    logical_bytes: int
    stored_bytes: int  # its distinct blobs, manifest included
    new_bytes: int  # blobs no earlier checkpoint uses
    shared_bytes: int  # blobs another checkpoint uses too
    problem: str | None = None  # set when the manifest or a chunk is damaged or missing

    @property
    def exclusive_bytes(self) -> int:
        """What removing it (then gc) frees, unless names outside checkpoints use the blobs."""
        return self.stored_bytes - self.shared_bytes

    def to_json(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["exclusive_bytes"] = self.exclusive_bytes
        return out


@dataclass
class IncompleteSave:
    """Chunk names below a checkpoint name that its manifest (if any) does not list."""

    name: str
    chunk_names: int
    logical_bytes: int

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class CheckpointList:
    location: str
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    incomplete: list[IncompleteSave] = field(default_factory=list)

    @property
    def logical_bytes(self) -> int:
        return sum(c.logical_bytes for c in self.checkpoints)

    @property
    def stored_bytes(self) -> int:
        """Distinct blob bytes over all checkpoints (the sum of their new bytes)."""
        return sum(c.new_bytes for c in self.checkpoints)

    def to_json(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "checkpoints": [c.to_json() for c in self.checkpoints],
            "incomplete": [s.to_json() for s in self.incomplete],
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
        }


def list_checkpoints(loc: Location) -> CheckpointList:
    """Every checkpoint in the store, oldest first, with its sizes; and the leftovers of saves
    that never finished.  Read-only.  A damaged checkpoint is listed with its ``problem``."""
    reader = catalog.open_reader(loc)
    if reader is None:
        raise CheckpointNotFoundError(f"no store at {loc}")
    out = CheckpointList(reader.location)
    manifests: list[tuple[str, Manifest | None, str | None, int]] = []
    for name in catalog.checkpoint_names(reader):
        manifest_bytes = reader.read_tensor_metadata(manifest_name(name)).nbytes
        try:
            found = catalog.read_manifest(reader, name)
            catalog.check_chunks(reader, found)
            manifests.append((name, found, None, manifest_bytes))
        except StoreError as exc:
            manifests.append((name, _safe_manifest(reader, name), str(exc), manifest_bytes))
    manifests.sort(key=lambda m: (m[1].time_ns if m[1] is not None else 0, m[0]))

    users: dict[str, int] = {}  # blob -> how many checkpoints use it
    for _, maybe, _, _ in manifests:
        for blob in maybe.blobs() if maybe is not None else ():
            users[blob] = users.get(blob, 0) + 1
    seen: set[str] = set()
    for name, manifest, problem, manifest_bytes in manifests:
        if manifest is None:
            out.checkpoints.append(
                CheckpointInfo(name, "", 0, 0, 0, 0, 0, manifest_bytes, manifest_bytes, 0, problem)
            )
            continue
        blobs = manifest.blobs()
        stored = sum(blobs.values()) + manifest_bytes
        new = sum(n for b, n in blobs.items() if b not in seen) + manifest_bytes
        shared = sum(n for b, n in blobs.items() if users[b] > 1)
        seen.update(blobs)
        out.checkpoints.append(
            CheckpointInfo(
                name=name,
                save_id=manifest.save_id,
                time_ns=manifest.time_ns,
                tensors=sum(1 for e in manifest.entries.values() if isinstance(e, TensorEntry)),
                values=sum(1 for e in manifest.entries.values() if not isinstance(e, TensorEntry)),
                chunks=len(manifest.chunks()),
                logical_bytes=manifest.logical_bytes,
                stored_bytes=stored,
                new_bytes=new,
                shared_bytes=shared,
                problem=problem,
            )
        )

    listed = {c.name for m in manifests if m[1] is not None for c in m[1].chunks()}
    leftovers: dict[str, IncompleteSave] = {}
    for tensor_name in reader.list_tensors(f"{PREFIX}/"):
        parts = tensor_name.split("/")
        if len(parts) < 4 or not is_checkpoint_name(parts[1]) or tensor_name in listed:
            continue
        save = leftovers.setdefault(parts[1], IncompleteSave(parts[1], 0, 0))
        save.chunk_names += 1
        try:
            save.logical_bytes += reader.read_tensor_metadata(tensor_name).view_nbytes
        except StoreError:
            pass  # a damaged record: verify reports it
    out.incomplete = list(leftovers.values())
    return out


def _safe_manifest(reader: Any, name: str) -> Manifest | None:
    try:
        return catalog.read_manifest(reader, name)
    except StoreError:
        return None


@dataclass
class RemoveReport:
    location: str
    removed: list[str] = field(default_factory=list)  # checkpoints (or incomplete saves) removed
    names: int = 0  # tensor names deleted
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def remove_checkpoints(
    loc: Location, names: Iterable[str] = (), *, keep_last: int | None = None, dry_run: bool = False
) -> RemoveReport:
    """Remove checkpoints by name, and with ``keep_last=N`` every checkpoint but the newest N.

    A name may also be that of an incomplete save (its leftover chunks are removed).  Every name
    is checked before anything is removed.  The manifest goes first, so a removal that is
    interrupted leaves at worst an incomplete save, never a listed checkpoint with chunks missing.
    Bytes are freed by ``gc``.
    """
    listing = list_checkpoints(loc)
    known = {c.name for c in listing.checkpoints} | {s.name for s in listing.incomplete}
    chosen: dict[str, None] = {}
    for name in names:
        if not is_checkpoint_name(name) or name not in known:
            raise CheckpointNotFoundError(
                f"no checkpoint {name!r} in {listing.location}; list them with 'tensorcas checkpoints ls'"
            )
        chosen[name] = None
    if keep_last is not None:
        if keep_last < 0:
            raise ValueError(f"keep_last must be >= 0, not {keep_last}")
        complete = [c.name for c in listing.checkpoints]  # oldest first
        chosen.update(dict.fromkeys(complete[: max(0, len(complete) - keep_last)]))
    report = RemoveReport(listing.location, list(chosen), dry_run=dry_run)
    if not chosen:
        return report
    reader = catalog.open_reader(loc)
    assert reader is not None
    plan = []
    for name in chosen:
        doomed = [manifest_name(name)] if catalog.has_checkpoint(reader, name) else []
        doomed += reader.list_tensors(chunks_prefix(name))
        plan.append(doomed)
        report.names += len(doomed)
    if dry_run:
        return report
    # The store a save of this process keeps open, if any (a training loop that keeps the last
    # N checkpoints removes one after each save): only what was appended since is read.
    writer = opened.take_writer(loc)
    try:
        for doomed in plan:  # a checkpoint at a time: its manifest first
            writer.delete_tensors(doomed)
    except BaseException:
        writer.close()
        raise
    opened.give_back(writer)
    return report


@dataclass
class CheckpointExport:
    checkpoint: str
    out: str
    tensors: int = 0
    values: int = 0
    nbytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def export_checkpoint(
    loc: Location, name: str, out: str | os.PathLike[str], *, overwrite: bool = False
) -> CheckpointExport:
    """Write checkpoint ``name`` as one safetensors file: every tensor whole (shards assembled),
    keyed by DCP's flattened key (``model.layers.0.weight``).  Non-tensor values go into the
    file's metadata under ``tensorcas.values``, in the manifest's JSON encoding (never pickle).
    The file appears whole or not at all; an existing ``out`` is replaced only with ``overwrite``.
    """
    from safetensors.torch import save_file

    from ..dcp.simple import load_flat

    out_path = os.path.abspath(os.fspath(out))
    if os.path.exists(out_path) and not overwrite:
        raise ExportError(
            f"{out_path} exists; choose another file or pass overwrite=True (--overwrite)"
        )
    manifest, flat = load_flat(loc, name)
    tensors = {k: v.contiguous() for k, v in flat.items() if isinstance(v, torch.Tensor)}
    values = {k: e.encoded for k, e in manifest.entries.items() if isinstance(e, ValueEntry)}
    report = CheckpointExport(name, out_path)
    report.tensors, report.values = len(tensors), len(values)
    report.nbytes = sum(t.nbytes for t in tensors.values())
    metadata = {
        "format": "pt",
        "tensorcas.checkpoint": name,
        "tensorcas.values": json.dumps(values),
    }
    directory, base = os.path.split(out_path)
    tmp = os.path.join(directory, f".{base}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors makes its files private; ours are ordinary
        os.replace(tmp, out_path)
    except OSError as exc:
        raise StoreIOError(f"writing {out_path} failed: {exc.strerror or exc}") from exc
    except Exception as exc:  # safetensors refuses a dtype it has no code for
        raise ExportError(f"checkpoint {name!r} cannot be written as safetensors: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return report
