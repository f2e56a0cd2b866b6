"""tensorcas in place of ``torch.utils._content_store`` for PyTorch's repro tooling.

``InputWriter``/``InputReader`` are PyTorch's own classes (``torch._dynamo.debug_utils``); the
switch (``tensorcas.torch_compat.install``) makes them store inputs in tensorcas.  Every input
is compared bit for bit, and its aliasing, leafness and ``requires_grad`` with what PyTorch's own
store gives back for the same inputs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from typing import Any

import pytest
import torch
import torch._dynamo.debug_utils as debug_utils
import torch._dynamo.utils as dynamo_utils
import torch.utils._content_store as torch_store
from click.testing import CliRunner
from torch._dynamo.debug_utils import InputReader, InputWriter

import tensorcas
from storetools import bits
from tensorcas import torch_compat
from tensorcas.cli import cli
from tensorcas.torch_compat import install

# -- helpers ------------------------------------------------------------------------------------


def every_kind() -> list[torch.Tensor]:
    """One of each kind of input a repro may hold."""
    torch.manual_seed(0)
    base = torch.randn(6, 8)
    leaf = torch.randn(5, requires_grad=True)
    big = torch.randn(40_000)  # 160 kB: a blob of its own, not packed
    return [
        base,
        base.t(),  # shares base's storage, transposed
        base[2:4, 1:],  # a view with a storage offset
        (leaf * 2),  # not a leaf, requires_grad
        leaf,  # a leaf that requires grad
        torch.randn(4).expand(3, 4),  # stride 0
        torch.randn(7).to(torch.float8_e4m3fn),
        torch.randn(3).to(torch.float8_e5m2)[1:],
        torch.empty(0, 5),
        torch.tensor(2.5),  # 0-dim
        torch.tensor(7, dtype=torch.int64),
        torch.randint(0, 2, (9,), dtype=torch.bool),
        torch.randn(4, 2, dtype=torch.bfloat16),
        torch.randn(3, dtype=torch.complex64),
        big[10:],
        big[:100].view(10, 10),  # same storage as the line above
        torch.randn(1, 3, 4, 4).to(memory_format=torch.channels_last),
    ]


def write_args(save_dir: str | None, inputs: list[Any], stable_hash: bool = True) -> str:
    """The ``load_args`` source PyTorch's ``InputWriter`` generates for ``inputs`` (SHA-1 digests
    when PyTorch's store writes: its fast hash would compile a kernel)."""
    writer = InputWriter(save_dir, stable_hash=stable_hash)
    for i, arg in enumerate(inputs):
        if isinstance(arg, torch.Tensor):
            writer.tensor(f"arg{i}", arg)
        else:
            writer.symint(f"arg{i}", arg)
    return "\n".join(writer.lines())


def load_args(source: str, save_dir: str | None) -> list[Any]:
    namespace: dict[str, Any] = {}
    exec("import torch\n" + source, namespace)
    reader = InputReader(save_dir)
    namespace["load_args"](reader)
    return reader.args


def sharing(tensors: list[Any]) -> list[int]:
    """Which earlier argument each one shares its storage with (its own index if none)."""
    out: list[int] = []
    for i, t in enumerate(tensors):
        ptr = t.untyped_storage().data_ptr()
        same = [j for j in range(i) if tensors[j].untyped_storage().data_ptr() == ptr and t.numel()]
        out.append(same[0] if same else i)
    return out


def assert_same_inputs(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == w.dtype and g.shape == w.shape and g.stride() == w.stride(), i
        assert g.storage_offset() == w.storage_offset(), i
        assert g.requires_grad == w.requires_grad and g.is_leaf == w.is_leaf, i
        assert bits(g) == bits(w), i
    assert sharing(got) == sharing(want)


@pytest.fixture
def switched():
    with install() as handle:
        yield handle


@pytest.fixture
def fresh_warnings():
    """PyTorch warns once per message; forget earlier ones so each test sees its own."""
    dynamo_utils.warn_once_cache.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


# -- the switch ---------------------------------------------------------------------------------


def test_install_swaps_and_restores():
    originals = (
        torch_store.ContentStoreWriter,
        torch_store.ContentStoreReader,
        torch_store.hash_storage,
    )
    assert debug_utils.ContentStoreReader is originals[1]
    with install():
        assert torch_compat.installed()
        assert torch_store.ContentStoreWriter is torch_compat.ContentStoreWriter
        assert torch_store.ContentStoreReader is torch_compat.ContentStoreReader
        assert torch_store.hash_storage is tensorcas.hash_storage
        assert debug_utils.ContentStoreWriter is torch_compat.ContentStoreWriter
        assert debug_utils.ContentStoreReader is torch_compat.ContentStoreReader
        with install():  # nested: the inner end leaves the switch in place
            pass
        assert debug_utils.ContentStoreReader is torch_compat.ContentStoreReader
    assert not torch_compat.installed()
    assert (
        torch_store.ContentStoreWriter,
        torch_store.ContentStoreReader,
        torch_store.hash_storage,
    ) == originals
    assert debug_utils.ContentStoreWriter is originals[0]
    assert InputReader.storage is getattr(InputReader.storage, "__wrapped__", InputReader.storage)

    handle = install()  # the plain call stays until uninstalled
    assert debug_utils.ContentStoreWriter is torch_compat.ContentStoreWriter
    handle.uninstall()
    handle.uninstall()  # twice is harmless
    assert debug_utils.ContentStoreWriter is originals[0]


# -- InputWriter / InputReader ------------------------------------------------------------------


def test_every_kind_of_input_round_trips_as_pytorch_store_does(tmp_path, switched):
    inputs = every_kind()
    source = write_args(str(tmp_path / "cas"), inputs)
    assert "blake3:" in source
    got = load_args(source, str(tmp_path / "cas"))
    assert_same_inputs(got, inputs)

    switched.uninstall()  # the same inputs through PyTorch's own store
    theirs = load_args(write_args(str(tmp_path / "pt"), inputs), str(tmp_path / "pt"))
    assert_same_inputs(theirs, inputs)
    assert sharing(got) == sharing(theirs)
    assert [t.is_leaf for t in got] == [t.is_leaf for t in theirs]
    assert tensorcas.verify(str(tmp_path / "cas")).ok


def test_symints_and_no_save_dir(tmp_path, switched, fresh_warnings):
    source = write_args(None, [torch.randn(3, 2), 5])
    args = load_args(source, None)
    assert args[0].shape == (3, 2) and args[1] == 5
    assert any("generating random data" in str(w.message) for w in fresh_warnings)


def test_writer_creates_store_where_pytorch_tooling_says(tmp_path, switched):
    """after_aot writes checkpoints/N.py, then names checkpoints/ as the save_dir; inductor's
    trace saves real inputs into its debug directory, among other files."""
    save_dir = tmp_path / "checkpoints"
    save_dir.mkdir()
    (save_dir / "11.py").write_text("# a repro\n")
    (save_dir / "output_code.txt").write_text("...")
    source = write_args(str(save_dir), [torch.arange(5.0)])
    assert bits(load_args(source, str(save_dir))[0]) == bits(torch.arange(5.0))
    assert tensorcas.verify(str(save_dir)).ok
    assert (save_dir / "11.py").read_text() == "# a repro\n"

    pytorch_dump = tmp_path / "pt"
    (pytorch_dump / "storages").mkdir(parents=True)
    with pytest.raises(tensorcas.FormatError, match="tensorcas import"):
        write_args(str(pytorch_dump), [torch.zeros(1)])
    with pytest.raises(tensorcas.FormatError, match="not empty"):  # the plain writer refuses
        tensorcas.ContentStoreWriter(str(tmp_path / "pt"))


def test_script_run_without_the_switch_stops_instead_of_using_random_data(tmp_path):
    save_dir = str(tmp_path / "cas")
    inputs = [torch.randn(4)]
    with install():
        source = write_args(save_dir, inputs)
    dynamo_utils.warn_once_cache.clear()
    with pytest.raises(NotADirectoryError, match="storages"):
        load_args(source, save_dir)  # PyTorch's own reader, against a tensorcas store
    with open(os.path.join(save_dir, "storages")) as f:
        assert "tensorcas repro" in f.read()
    with install():  # and with the switch it loads
        assert bits(load_args(source, save_dir)[0]) == bits(inputs[0])


# -- missing data: random, with PyTorch's warning -----------------------------------------------


def _drop_loose_blobs(save_dir: str) -> None:
    shutil.rmtree(os.path.join(save_dir, "blobs"))


def _drop_packs(save_dir: str) -> None:
    shutil.rmtree(os.path.join(save_dir, "packs"))


@pytest.mark.parametrize(
    "nbytes, damage",
    [(400_000, _drop_loose_blobs), (640, _drop_packs)],
    ids=["missing-blob", "missing-pack"],
)
def test_missing_data_falls_back_to_random(tmp_path, switched, fresh_warnings, nbytes, damage):
    save_dir = str(tmp_path / "cas")
    x = torch.randn(nbytes // 4)
    source = write_args(save_dir, [x, x[1:]])
    damage(save_dir)
    args = load_args(source, save_dir)
    assert args[0].shape == x.shape and args[1].storage_offset() == 1
    digest = tensorcas.hash_storage(x.untyped_storage())
    assert f"could not load {digest}, generating random data instead" in [
        str(w.message) for w in fresh_warnings
    ]


def test_missing_save_dir_falls_back_to_random(tmp_path, switched, fresh_warnings):
    source = write_args(str(tmp_path / "cas"), [torch.randn(3)])
    args = load_args(source, str(tmp_path / "elsewhere"))  # InputReader itself must not fail
    assert args[0].shape == (3,)
    assert any("generating random data instead" in str(w.message) for w in fresh_warnings)


def test_foreign_digest_falls_back_to_random(tmp_path, fresh_warnings):
    """A script written by PyTorch's store (SHA-1 digests), pointed at a tensorcas store that
    never imported them."""
    x = torch.randn(5)
    source = write_args(str(tmp_path / "pt"), [x])
    sha1 = hashlib.sha1(bytes(x.untyped_storage())).hexdigest()
    assert repr(sha1) in source
    with tensorcas.ContentStoreWriter(str(tmp_path / "cas")) as writer:
        writer.write_tensor("other", torch.zeros(1))
    with install():
        args = load_args(source, str(tmp_path / "cas"))
    assert args[0].shape == (5,)
    assert f"could not load {sha1}, generating random data instead" in [
        str(w.message) for w in fresh_warnings
    ]


def test_missing_data_errors_are_file_not_found_errors(tmp_path):
    loc = str(tmp_path / "cas")
    small, large = torch.randn(10), torch.randn(100_000)
    with tensorcas.ContentStoreWriter(loc) as writer:
        writer.write_tensor("small", small)
        writer.write_tensor("large", large)
    reader = tensorcas.ContentStoreReader(loc)
    absent = "blake3:" + "ab" * 32
    with pytest.raises(tensorcas.BlobNotFoundError, match="not in store") as info:
        reader.read_storage(absent)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, KeyError)
    with pytest.raises(FileNotFoundError, match="no tensor named 'nothing'"):
        reader.read_tensor_metadata("nothing")
    with pytest.raises(FileNotFoundError, match="no tensorcas store"):
        tensorcas.ContentStoreReader(str(tmp_path / "nowhere"))

    _drop_packs(loc)
    _drop_loose_blobs(loc)
    reader = tensorcas.ContentStoreReader(loc)
    for name, t in (("small", small), ("large", large)):
        digest = tensorcas.hash_storage(t.untyped_storage())
        with pytest.raises(tensorcas.BlobLostError, match="tensorcas verify") as lost:
            reader.read_storage(digest)
        assert isinstance(lost.value, FileNotFoundError)
        assert isinstance(lost.value, tensorcas.CorruptObjectError)
        with pytest.raises(tensorcas.BlobLostError, match=f"tensor '{name}'"):
            reader.read_tensor(name)


def test_compat_reader_opens_lazily(tmp_path):
    loc = str(tmp_path / "later")
    reader = torch_compat.ContentStoreReader(loc)  # PyTorch's never fails here either
    with pytest.raises(tensorcas.StoreNotFoundError):
        reader.read_storage("blake3:" + "0" * 64)
    with tensorcas.ContentStoreWriter(loc) as writer:
        digest = writer.write_storage(torch.arange(4, dtype=torch.uint8).untyped_storage())
    assert bytes(reader.read_storage(digest)) == bytes(range(4))
    assert reader.list_tensors() == [] and "x" not in reader


# -- API differences ----------------------------------------------------------------------------


def test_metadata_unpacks_like_pytorch_tuple(tmp_path):
    loc = str(tmp_path / "cas")
    base = torch.randn(4, 5)
    view = base[1:, 2:].t()
    with tensorcas.ContentStoreWriter(loc, True) as writer:  # positional stable_hash, as PyTorch's
        record = writer.write_tensor("v", view)
        computed = writer.compute_tensor_metadata(view)
        conj = torch.randn(3, dtype=torch.complex64).conj()
        writer.write_tensor("c", conj)
        computed_conj = writer.compute_tensor_metadata(conj)
    meta = tensorcas.ContentStoreReader(loc).read_tensor_metadata("v")
    dtype, h, offset, shape, stride, extra = meta
    assert (dtype, offset, shape, stride, extra) == (torch.float32, 7, (3, 3), (1, 5), {})
    assert h == tensorcas.hash_storage(base.untyped_storage()) == meta.blob == meta[1]
    assert len(meta) == 6 and meta[2:4] == (7, (3, 3))
    assert computed == meta and meta == computed and meta == record and record == meta
    # after_aot's analyze compares the two item by item
    assert all(a == b for a, b in zip(computed, meta, strict=True))
    assert tensorcas.ContentStoreReader(loc).read_tensor_metadata("c") == computed_conj


def test_rewritten_name_is_seen_after_refresh(tmp_path):
    loc = str(tmp_path / "cas")
    with tensorcas.ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.zeros(2))
    reader = tensorcas.ContentStoreReader(loc)
    assert reader.read_tensor("x").sum() == 0
    with tensorcas.ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.ones(2))
        writer.write_tensor("y", torch.ones(3))
    assert reader.read_tensor("x").sum() == 0  # the logs as last read
    assert reader.read_tensor("y").sum() == 3  # an unknown name: the logs are read again
    assert reader.read_tensor("x").sum() == 2
    with tensorcas.ContentStoreWriter(loc) as writer:
        writer.write_tensor("x", torch.full((2,), 2.0))
    assert reader.read_tensor("x").sum() == 2
    reader.refresh()
    assert reader.read_tensor("x").sum() == 4


# -- load_tensor beside debugprims.load_tensor --------------------------------------------------


def test_load_tensor_beside_debugprims(tmp_path):
    """Same values, size, stride and dtype conversion as PyTorch's operator; the storage offset
    is 0 where PyTorch's keeps the stored one, so the real result always matches the fake one
    (see docs/pytorch.md)."""
    from torch._prims.debug_prims import load_tensor_reader as torch_reader
    from torch._subclasses import FakeTensorMode

    base = torch.randn(10)
    view = base[3:9].view(2, 3)
    pt, cas = str(tmp_path / "pt"), str(tmp_path / "cas")
    torch_store.ContentStoreWriter(pt).write_tensor("v", view)
    with tensorcas.ContentStoreWriter(cas) as writer:
        writer.write_tensor("v", view)
    cpu = torch.device("cpu")
    for dtype in (torch.float32, torch.float64):
        with torch_reader(pt):
            theirs = torch.ops.debugprims.load_tensor("v", [2, 3], [3, 1], dtype=dtype, device=cpu)
        with tensorcas.load_tensor_reader(cas):
            ours = torch.ops.tensorcas.load_tensor("v", [2, 3], [3, 1], dtype=dtype, device=cpu)
            with FakeTensorMode():
                fake = torch.ops.tensorcas.load_tensor("v", [2, 3], [3, 1], dtype=dtype, device=cpu)
        assert bits(ours) == bits(theirs) == bits(view.to(dtype))
        assert ours.shape == theirs.shape and ours.stride() == theirs.stride() == (3, 1)
        assert ours.dtype == theirs.dtype == dtype
        assert theirs.storage_offset() == 3
        assert ours.storage_offset() == fake.storage_offset() == 0


# -- a repro saved by PyTorch's own store -------------------------------------------------------


def test_import_of_pytorch_repro_store_keeps_every_storage_by_its_sha1(tmp_path):
    inputs = every_kind()
    pt, cas = str(tmp_path / "pt"), str(tmp_path / "cas")
    source = write_args(pt, inputs)  # PyTorch's own store: storages/<sha1> only
    assert os.listdir(pt) == ["storages"]

    result = CliRunner().invoke(cli, ["import", cas, pt])
    assert result.exit_code == 0, result.output
    n = len(os.listdir(os.path.join(pt, "storages")))
    assert f"imported 0 tensor(s) and {n} storage(s)" in result.output

    reader = tensorcas.ContentStoreReader(cas)
    for t in inputs:
        storage = t.untyped_storage()
        sha1 = hashlib.sha1(bytes(storage.cpu())).hexdigest()
        assert bytes(reader.read_storage(sha1)) == bytes(storage)
    with pytest.raises(tensorcas.BlobNotFoundError) as info:
        reader.read_storage("0" * 40)  # a SHA-1 this store never saw: missing, not invalid
    assert isinstance(info.value, FileNotFoundError)

    tensorcas.gc(cas, grace_seconds=0)  # imported storages are roots: gc keeps them
    with install():  # the script PyTorch generated, unchanged, on the imported store
        assert_same_inputs(load_args(source, cas), inputs)
    with pytest.raises(NotADirectoryError):
        load_args(source, cas)  # without the switch: stopped, not random


def test_gc_keeps_repro_inputs(tmp_path, switched):
    save_dir = str(tmp_path / "cas")
    inputs = every_kind()
    source = write_args(save_dir, inputs)
    tensorcas.gc(save_dir, grace_seconds=0)
    assert_same_inputs(load_args(source, save_dir), inputs)


def test_repro_command_runs_a_script_with_the_switch(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "import torch.utils._content_store as cs\n"
        "from tensorcas import torch_compat\n"
        "print(__name__, sys.argv[1:], torch_compat.installed(), cs.ContentStoreWriter.__module__)\n"
        "sys.exit(3)\n"
    )
    result = CliRunner().invoke(cli, ["repro", str(script), "run", "--save-dir", "x"])
    assert result.exit_code == 3
    assert "__main__ ['run', '--save-dir', 'x'] True tensorcas.torch_compat" in result.output
    assert not torch_compat.installed()
    result = CliRunner().invoke(cli, ["repro", str(tmp_path / "nothing.py")])
    assert result.exit_code == 2
