"""A tour of tensorcas on a local store: dump a model run, dedupe a second snapshot, read it
back, replay it inside a compiled graph, and verify the store.

Run it with ``bash scripts/demo.sh`` (which sets up .venv first), or
``python examples/demo.py [STORE_DIR]`` (default ``demo-store``).  STORE_DIR must be new, empty, or
a store this demo wrote before (which is then rewritten); anything else is refused untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time

import torch

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter, load_tensor_reader

DEFAULT_STORE = "demo-store"

#: Every tensor the demo writes is under one of these.
_DEMO_PREFIXES = ("step0/", "step1/")

#: What a tensorcas store holds (docs/FORMAT.md): the marker, blobs/xx/<62 hex>, logs, packs, and
#: hidden temporaries of interrupted writes.
_STORE_FILE = re.compile(
    r"(?:tensorcas\.json|blobs/[0-9a-f]{2}/[0-9a-f]{62}|logs/[0-9a-z][0-9a-z._-]*\.log"
    r"|packs/[0-9a-z][0-9a-z._-]*\.pack|(?:(?:blobs/[0-9a-f]{2}|logs|packs)/)?\.(?:tmp|gc)-[^/]*)"
)

_STORE_DIR = re.compile(r"blobs|blobs/[0-9a-f]{2}|logs|packs")


class NotTheDemosError(Exception):
    """The directory holds something the demo did not write; nothing was deleted."""


def check_replaceable(store: str) -> None:
    """Raise :class:`NotTheDemosError` unless ``store`` is absent, an empty directory, or a store
    holding only what this demo writes (so deleting it loses nothing of anyone's)."""
    if not os.path.lexists(store):
        return
    if os.path.islink(store) or not os.path.isdir(store):
        raise NotTheDemosError(f"{store} exists and is not a directory")
    if not os.listdir(store):
        return
    for dirpath, dirs, files in os.walk(store):
        for entry in files + dirs:
            path = os.path.join(dirpath, entry)
            rel = os.path.relpath(path, store).replace(os.sep, "/")
            is_dir = entry in dirs and not os.path.islink(path)
            if not (_STORE_DIR if is_dir else _STORE_FILE).fullmatch(rel):
                raise NotTheDemosError(f"{store} holds {rel}, which is not part of a tensorcas store")
    try:
        names = ContentStoreReader(store).list_tensors()
    except tensorcas.StoreError as exc:
        raise NotTheDemosError(f"{store} is not a store this demo can read ({exc})") from None
    foreign = [n for n in names if not n.startswith(_DEMO_PREFIXES)]
    if foreign:
        raise NotTheDemosError(f"{store} holds tensors this demo did not write (such as {foreign[0]!r})")


def main(store: str) -> None:
    try:
        check_replaceable(store)
    except NotTheDemosError as exc:
        print(
            f"demo: {exc}; nothing was deleted. Give a new or empty directory, "
            f"e.g. python examples/demo.py {DEFAULT_STORE}",
            file=sys.stderr,
        )
        sys.exit(2)
    if os.path.isdir(store):
        shutil.rmtree(store)  # a store this demo wrote before: start again from nothing
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    batch = torch.randn(32, 256)

    # 1. Dump parameters, the input and every intermediate of one forward pass.
    start = time.perf_counter()
    with ContentStoreWriter(store) as writer:
        for name, param in model.named_parameters():
            writer.write_tensor(f"step0/params/{name}", param)
        writer.write_tensor("step0/input", batch)
        hidden = batch
        for i, layer in enumerate(model):
            hidden = layer(hidden)
            writer.write_tensor(f"step0/act/{i}", hidden)
        writer.write_tensor("step0/input_T", batch.t())  # a view: stored as a record, not a copy
    print(f"wrote step 0 in {time.perf_counter() - start:.3f}s")

    # 2. A second snapshot where only the last layer changed: unchanged tensors cost no bytes.
    with torch.no_grad():
        model[2].weight.mul_(0.5)
    with ContentStoreWriter(store) as writer:  # reopening appends
        for name, param in model.named_parameters():
            writer.write_tensor(f"step1/params/{name}", param)

    # 3. Read back: views are views again, identical bytes share one storage.
    reader = ContentStoreReader(store)
    names = reader.list_tensors()
    logical = sum(reader.read_tensor_metadata(n).view_nbytes for n in names)
    stored = tensorcas.du(store).referenced_bytes  # each distinct blob once
    print(f"{len(names)} tensors, {logical / 2**20:.2f} MiB named, {stored / 2**20:.2f} MiB stored "
          f"(dedupe x{logical / stored:.2f})")
    x, xt = reader.read_tensor("step0/input"), reader.read_tensor("step0/input_T")
    assert torch.equal(x, batch) and xt.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    w0, w1 = reader.read_tensor("step0/params/0.weight"), reader.read_tensor("step1/params/0.weight")
    same = w0.untyped_storage().data_ptr() == w1.untyped_storage().data_ptr()
    print(f"unchanged layer shares one storage across snapshots: {same}")
    for name in ("step0/params/2.weight", "step1/params/2.weight"):
        meta = reader.read_tensor_metadata(name)
        print(f"  {name}: {meta.dtype}{list(meta.shape)} blob {meta.blob[:19]}...")

    # 4. Replay: the operator loads stored tensors inside a compiled function.
    @torch.compile(backend="aot_eager")
    def replay() -> torch.Tensor:
        w = torch.ops.tensorcas.load_tensor("step0/params/0.weight", (512, 256), (256, 1),
                                            dtype=torch.float32, device="cpu")
        inp = torch.ops.tensorcas.load_tensor("step0/input", (32, 256), (256, 1),
                                              dtype=torch.float32, device="cpu")
        return inp @ w.t()

    with load_tensor_reader(store):
        replayed = replay()
    expected = reader.read_tensor("step0/input") @ reader.read_tensor("step0/params/0.weight").t()
    print(f"replayed matmul inside torch.compile matches: {torch.allclose(replayed, expected)}")

    # 5. Verify: every blob re-hashed, every record checked.
    report = tensorcas.verify(store)
    print(f"verify: {'healthy' if report.ok else 'DAMAGED'} "
          f"({report.blobs_checked} blobs, {report.records_checked} records)")
    print(f"store at {os.path.abspath(store)}")
    if not report.ok:
        sys.exit(1)


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) > 1 or (args and args[0].startswith("-")):
        # Never a store named "--help": anything that looks like an option gets the usage.
        print(f"usage: python examples/demo.py [STORE_DIR]   (default {DEFAULT_STORE})")
        print(__doc__.strip())
        sys.exit(0 if args and args[0] in ("-h", "--help") else 2)
    main(args[0] if args else DEFAULT_STORE)
