"""``Writer`` and ``Reader``: a ``torch.distributed.checkpoint`` storage layer on a tensorcas store.

DCP drives a save in steps (see ``torch.distributed.checkpoint.storage.StorageWriter``): every rank
plans, the coordinator merges the plans, every rank writes its items (``write_data``), and the
coordinator gets every rank's results and the global metadata (``finish``).  Here:

* ``write_data``: each rank writes each tensor chunk it owns as a tensor name
  ``checkpoints/<checkpoint>/<save id>/<fqn>@<offsets>`` with its own ``ContentStoreWriter``:
  bytes already in the store (from any rank, any earlier checkpoint) are hashed, not written.
  Non-tensor values are not written at all; they travel to the coordinator in the results.
* ``finish``: the coordinator turns DCP's metadata and the results into a JSON manifest
  (:mod:`.manifest`), checks that every chunk name holds the blob its rank reported, and only
  then publishes the manifest.  A save that fails or is killed before this point leaves chunk
  names but no checkpoint; the next save of that checkpoint name removes them.

Loading reads the manifest instead of a pickle, and each rank reads the chunks its plan needs,
so a checkpoint saved on N ranks loads on any number of ranks, as DCP reshards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import uuid
from typing import Any, cast

import torch
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import (
    Metadata,
    MetadataIndex,
    StorageMeta,
)
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from ..errors import CheckpointError, CheckpointNotFoundError
from ..hashing import OVERLAP_THRESHOLD
from ..reader import ContentStoreReader
from ..store import Location
from ..writer import ContentStoreWriter
from . import catalog, durable, opened
from .manifest import Manifest, ValueEntry
from .metadata import ChunkResult, ValueResult, manifest_from_metadata, metadata_from_manifest
from .names import chunk_name, chunks_prefix, manifest_name, new_save_id, validate_checkpoint_name
from .values import encode_value

__all__ = ["Reader", "Writer"]


def _name_or_none(checkpoint_id: str | os.PathLike[str] | None) -> str | None:
    if checkpoint_id is None:
        return None
    return validate_checkpoint_name(os.fspath(checkpoint_id))


class Writer(StorageWriter):
    """Saves a DCP checkpoint into a tensorcas store as the checkpoint ``name``.

    ``dcp.save(state_dict, storage_writer=Writer("store", "step-100"))``; a ``checkpoint_id``
    given to ``dcp.save`` replaces ``name``.  Every rank must reach the same store (a shared
    directory).

    Args:
        loc: the store (a directory, created if missing, or a backend).
        name: the checkpoint's name: letters, digits, ``.``, ``_``, ``-`` (``step-100``).
        overwrite: replace a checkpoint of that name.  The old one stays complete and listed until
            the new one is published.  Without it, saving under an existing name fails before
            anything is written.
        durable: make every rank's writes durable before it reports them (one ``syncfs`` of a
            local store's filesystem on Linux, else an fsync per write), so that a published
            checkpoint survives power loss, as with ``FileSystemWriter(sync_files=True)``.
            Without it, a finished save survives its processes being killed, not the machine
            losing power.
    """

    def __init__(
        self,
        loc: Location,
        name: str | None = None,
        *,
        overwrite: bool = False,
        durable: bool = False,
    ) -> None:
        super().__init__()
        self.loc = loc
        self.name = _name_or_none(name)
        self.overwrite = overwrite
        self.durable = durable
        self.save_id = new_save_id()
        self.is_coordinator = False
        #: This rank's one writer for a save (see ``_store_writer``), and whether its writes are
        #: made durable by one ``syncfs`` instead of an fsync each.
        self._writer: ContentStoreWriter | None = None
        self._sync_at_end = False

    def __getstate__(self) -> dict[str, Any]:
        # DCP may send a storage writer to another process (async_save): an open writer stays.
        state = dict(self.__dict__)
        state["_writer"] = None
        return state

    def _store_writer(self) -> ContentStoreWriter:
        """This rank's writer for the current save, taken once: the store's logs are read when
        it opens and then only what was appended since, however many steps of the save ask (a
        store of many checkpoints has long logs).  Given back (``opened``) when the rank's part
        of the save ends well, for the next save of the process to append to the same log;
        closed when it fails."""
        if self._writer is None:
            # A store this process saved to before is still open: only new log lines are read.
            writer = opened.take_writer(self.loc)
            self._sync_at_end = self.durable and durable.can_sync_filesystem(writer)
            if self.durable and not self._sync_at_end:
                opened.give_back(writer)
                writer = ContentStoreWriter(self.loc, durable=True)
            self._writer = writer
        return self._writer

    def _close_writer(self, *, failed: bool = False) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if failed:
            writer.close()
        else:
            opened.give_back(writer)  # (a writer of a store not kept open is closed there)

    def _store_reader(self) -> ContentStoreReader:
        """A reader over the same open store as ``_store_writer``, brought up to date: the one
        reading of the logs that a step of the save needs (later questions are answered from it)."""
        reader = ContentStoreReader.sharing(self._store_writer().store, cache=False)
        reader.refresh()
        return reader

    # -- the StorageWriter contract ------------------------------------------------------------

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        self._close_writer(failed=True)  # left open by a save that failed
        if checkpoint_id is not None:
            self.name = _name_or_none(checkpoint_id)
        self.save_id = new_save_id()

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("use_collectives", True) is False:
            raise CheckpointError(
                "tensorcas.dcp.Writer needs use_collectives=True: a checkpoint is one manifest, "
                "published once every rank has finished"
            )
        self.is_coordinator = is_coordinator
        # DCP resets a storage writer only when given a checkpoint_id: a writer left open by a
        # save that failed (here or on another rank) is closed before this one starts.
        self._close_writer(failed=True)
        self._checkpoint()  # a missing name fails on every rank, before any planning

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        # Every rank names its chunks with the coordinator's save id.  Whether the checkpoint
        # exists already is asked in ``write_data``, on every rank before it writes anything:
        # it needs the store's logs read, which every rank does there anyway, while its first
        # chunks are hashed.
        return [dataclasses.replace(plan, storage_data=self.save_id) for plan in plans]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        checkpoint = self._checkpoint()
        save_id = plan.storage_data if isinstance(plan.storage_data, str) else self.save_id
        results: list[WriteResult] = []
        tensors = []
        for item in plan.items:
            if item.type == WriteItemType.BYTE_IO:
                encoded = encode_value(_lookup_object(planner, item.index), item.index.fqn)
                results.append(WriteResult(item.index, 0, ValueResult(encoded)))
            else:
                tensors.append(item)
        # One writer for all chunks, in one batch: large chunks are hashed on a thread per core,
        # ahead, while this one stores them and writes their records (measured: a thread per
        # core writing chunks in parallel was no faster).  A chunk that is a view of a larger
        # storage is copied (only its own elements are stored) after the batch, one at a time,
        # so that such copies never all exist at once (a state dict of views into one buffer).
        writer = self._store_writer()
        try:
            whole: list[tuple[WriteItem, str, torch.Tensor]] = []
            views: list[tuple[WriteItem, str, torch.Tensor]] = []
            for item in tensors:
                name = chunk_name(checkpoint, save_id, item.index.fqn, tuple(item.index.offset or ()))
                tensor = _chunk_tensor(planner, item)
                is_view = tensor.untyped_storage().nbytes() != tensor.nbytes
                (views if is_view else whole).append((item, name, tensor))
            # Small chunks first: they are written while the first large ones are hashed, rather
            # than after the last one (names are unique within a save, so the order is free).
            whole.sort(key=lambda entry: entry[2].nbytes >= OVERLAP_THRESHOLD)
            with durable.EarlyWriteback(writer) if self._sync_at_end else contextlib.nullcontext():
                records = writer.write_tensors(
                    [(name, tensor) for _, name, tensor in whole],
                    before_writing=self._refuse_existing,
                )
                assert records is not None  # not in background mode
                for _, name, tensor in views:
                    record = writer.write_tensor(name, tensor.clone())
                    assert record is not None
                    records.append(record)
            for (item, name, _), record in zip(whole + views, records):
                results.append(
                    WriteResult(
                        item.index,
                        record.view_nbytes,
                        ChunkResult(name, record.blob, record.nbytes),
                    )
                )
            if self._sync_at_end:
                durable.sync_filesystem(writer)
        except BaseException:
            self._close_writer(failed=True)  # the save ends here, on every rank
            raise
        if not self.is_coordinator:
            self._close_writer()  # the coordinator's goes on to ``finish``
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def _refuse_existing(self) -> None:
        """Raise unless the checkpoint is new (or ``overwrite``): before a rank writes anything."""
        if self.overwrite:
            return
        checkpoint = self._checkpoint()
        reader = self._store_reader()
        if reader.store.has_name(manifest_name(checkpoint)):
            raise CheckpointError(
                f"checkpoint {checkpoint!r} already exists in {reader.location}; choose another "
                "name, pass overwrite=True, or remove it with 'tensorcas checkpoints rm'"
            )

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        checkpoint = self._checkpoint()
        by_index = {wr.index: wr.storage_data for rank_results in results for wr in rank_results}
        save_id = next(
            (d.name.split("/")[2] for d in by_index.values() if isinstance(d, ChunkResult)),
            self.save_id,
        )
        manifest = manifest_from_metadata(checkpoint, save_id, metadata, by_index)
        try:
            writer = self._store_writer()
            reader = self._store_reader()  # now with every rank's chunks
            catalog.check_chunks(reader, manifest)  # every rank's chunks are there, with their blobs
            if not self.overwrite and reader.store.has_name(manifest_name(checkpoint)):
                raise CheckpointError(
                    f"checkpoint {checkpoint!r} was saved by someone else meanwhile; nothing was published"
                )
            catalog.publish_manifest(writer, manifest)
            if self._sync_at_end:
                durable.sync_filesystem(writer)
            # Chunks of earlier saves under this name (replaced, or never finished) are garbage now.
            keep = {c.name for c in manifest.chunks()}
            stale = reader.store.names(chunks_prefix(checkpoint), refresh=False)
            if any(name not in keep for name in stale):
                writer.delete_tensors(name for name in stale if name not in keep)
        except BaseException:
            self._close_writer(failed=True)
            raise
        self._close_writer()

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta(checkpoint_id=self.name, save_id=self.save_id)

    @property
    def checkpoint_id(self) -> str | None:
        return self.name

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """Whether ``checkpoint_id`` can name a checkpoint (a store location cannot)."""
        try:
            validate_checkpoint_name(os.fspath(checkpoint_id))
        except ValueError:
            return False
        return True

    def _checkpoint(self) -> str:
        if self.name is None:
            raise CheckpointError(
                "no checkpoint name: pass one to Writer(loc, name) or as checkpoint_id"
            )
        return self.name


class Reader(StorageReader):
    """Loads a checkpoint saved by :class:`Writer`, on any number of ranks.

    ``dcp.load(state_dict, storage_reader=Reader("store", "step-100"))``.  The manifest is JSON,
    validated before use; non-tensor values are rebuilt from it, never unpickled.

    Args:
        loc: the store.
        name: the checkpoint (a ``checkpoint_id`` given to ``dcp.load`` replaces it).
        verify: re-hash every blob read (see ``ContentStoreReader``); sizes are always checked.
    """

    def __init__(self, loc: Location, name: str | None = None, *, verify: bool = False) -> None:
        super().__init__()
        self.loc = loc
        self.name = _name_or_none(name)
        self.verify = verify
        self.load_id = str(uuid.uuid4())
        self._manifest: Manifest | None = None
        self.storage_data: dict[MetadataIndex, Any] = {}

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        self.storage_data = {}
        self._manifest = None
        if checkpoint_id is not None:
            self.name = _name_or_none(checkpoint_id)
        self.load_id = str(uuid.uuid4())

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        if kwargs.get("rank") is not None:
            raise CheckpointError(
                "tensorcas checkpoints have one manifest for all ranks, none per rank"
            )
        if self.name is None:
            raise CheckpointError(
                "no checkpoint name: pass one to Reader(loc, name) or as checkpoint_id"
            )
        reader = catalog.open_reader(self.loc)
        if reader is None:
            raise CheckpointNotFoundError(
                f"no checkpoint {self.name!r}: there is no store at {self.loc}"
            )
        self._manifest = catalog.read_manifest(reader, self.name)
        return metadata_from_manifest(self._manifest, self.load_id)

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        if metadata.storage_data is None:
            raise CheckpointError(
                "the checkpoint metadata has no storage data; read it with Reader.read_metadata"
            )
        self.storage_data = metadata.storage_data

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        assert self.name is not None
        # Chunks are copied into the destination at once: mapping them saves a copy, and the
        # mapping is dropped before this returns.
        reader = catalog.open_reader(self.loc, mmap=True)
        if reader is None:
            raise CheckpointError(f"the store at {self.loc} is gone")
        reader.verify = self.verify
        # Read each stored chunk once, even when several destination shards need parts of it.
        items = sorted(plan.items, key=lambda it: _sort_key(self.storage_data[it.storage_index]))
        current: tuple[str, torch.Tensor] | None = None
        for item in items:
            info = self.storage_data[item.storage_index]
            if item.type == LoadItemType.BYTE_IO:
                if not isinstance(info, ValueEntry):
                    raise CheckpointError(
                        f"{item.storage_index.fqn!r} is a tensor in the checkpoint, not a value"
                    )
                _load_value(planner, item, info.value())
                continue
            if not isinstance(info, tuple):
                raise CheckpointError(
                    f"{item.storage_index.fqn!r} is a value in the checkpoint, not a tensor"
                )
            dtype, chunk = info
            if current is None or current[0] != chunk.name:
                current = (chunk.name, catalog.read_chunk(reader, self.name, dtype, chunk))
            source = current[1]
            for dim, (start, length) in enumerate(zip(item.storage_offsets, item.lengths)):
                source = source.narrow(dim, start, length)
            target = planner.resolve_tensor(item).detach()
            if target.size() != source.size():
                raise CheckpointError(
                    f"{item.storage_index.fqn!r}: the checkpoint's piece is {list(source.size())}, "
                    f"the destination {list(target.size())}"
                )
            target.copy_(source)
            planner.commit_tensor(item, target)
        future: Future[None] = Future()
        future.set_result(None)
        return future

    @property
    def checkpoint_id(self) -> str | None:
        return self.name

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return Writer.validate_checkpoint_id(checkpoint_id)


def _chunk_tensor(planner: SavePlanner, item: WriteItem) -> torch.Tensor:
    tensor = planner.resolve_data(item)
    if not isinstance(tensor, torch.Tensor):
        raise CheckpointError(
            f"{item.index.fqn!r}: the planner gave a {type(tensor).__name__}, not a tensor"
        )
    return tensor.detach()


def _sort_key(info: Any) -> str:
    return info[1].name if isinstance(info, tuple) else ""


def _load_value(planner: LoadPlanner, item: ReadItem, value: Any) -> None:
    """Give a non-tensor value to the planner.  DCP's ``load_bytes`` takes a pickle; for its
    default planner the value is put in place directly, as that planner would after unpickling,
    so loading unpickles nothing.  Another planner gets a pickle that tensorcas made itself, of
    the validated plain value (nothing read from the store is unpickled)."""
    try:  # DCP's own helper for putting a value at a path (private: it may move)
        from torch.distributed.checkpoint import _traverse

        set_element: Any = _traverse.set_element
    except (ImportError, AttributeError):
        set_element = None
    if set_element is not None and type(planner).load_bytes is DefaultLoadPlanner.load_bytes:
        default = cast(DefaultLoadPlanner, planner)
        fqn = item.dest_index.fqn
        if default.flatten_state_dict:
            set_element(default.original_state_dict, default.mappings[fqn], value)
        else:
            default.state_dict[fqn] = value
        return
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    planner.load_bytes(item, buffer)


def _lookup_object(planner: SavePlanner, index: MetadataIndex) -> Any:
    """The original (unpickled) value behind a BYTE_IO item.  DCP's planners pickle values in
    ``resolve_data``; tensorcas keeps them as JSON instead, so it needs the value itself."""
    lookup = getattr(planner, "lookup_object", None)
    if lookup is None:
        raise CheckpointError(
            f"{index.fqn!r} is a non-tensor value, and the planner {type(planner).__name__} cannot give it "
            "without pickle; use a planner derived from DefaultSavePlanner"
        )
    return lookup(index)
