"""Every storable dtype and every common tensor layout survives a round trip bit for bit.

Values are compared as raw bytes, never with ``==``: NaN payloads, signed zeros and the bit patterns
of exotic float formats must come back exactly, and ``==`` would hide a swapped NaN or a -0.0.
"""

from __future__ import annotations

import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter, UnsupportedTensorError
from tensorcas.format import DTYPES


def storage_bytes(t: torch.Tensor) -> bytes:
    """All bytes of the tensor's storage (works for every dtype, even ones without kernels)."""
    return bytes(t.untyped_storage())


def same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return StorageWeakRef(a.untyped_storage()) == StorageWeakRef(b.untyped_storage())


def assert_same_tensor(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same metadata and the same bytes in every element the view can reach."""
    assert got.dtype == want.dtype
    assert tuple(got.shape) == tuple(want.shape)
    assert got.stride() == want.stride()
    assert got.storage_offset() == want.storage_offset()
    assert got.requires_grad == want.requires_grad
    assert storage_bytes(got) == storage_bytes(want)


def random_bytes_tensor(dtype: torch.dtype, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` elements of ``dtype`` with random bit patterns (NaNs, infinities, subnormals...)."""
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n * dtype.itemsize,), dtype=torch.uint8, generator=gen)
    if dtype == torch.bool:
        raw = raw % 2  # a bool byte other than 0 or 1 is not a valid bool
    return raw.view(dtype)


@pytest.fixture
def store(tmp_path) -> str:
    return str(tmp_path / "store")


def round_trip(
    store: str, tensors: dict[str, torch.Tensor], **reader_kw
) -> dict[str, torch.Tensor]:
    with ContentStoreWriter(store) as writer:
        for name, t in tensors.items():
            writer.write_tensor(name, t)
    reader = ContentStoreReader(store, **reader_kw)
    return {name: reader.read_tensor(name) for name in tensors}


# -- dtypes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype_name", sorted(DTYPES))
def test_every_dtype_round_trips_bit_exact(store, dtype_name):
    dtype = DTYPES[dtype_name]
    t = random_bytes_tensor(dtype, 64)
    got = round_trip(store, {"t": t, "v": t[3:40:3]})
    assert_same_tensor(got["t"], t)
    assert_same_tensor(got["v"], t[3:40:3])
    assert got["t"].view(torch.uint8).tolist() == t.view(torch.uint8).tolist()
    record = ContentStoreReader(store).read_tensor_metadata("t")
    assert record.dtype == dtype_name
    assert record.nbytes == 64 * dtype.itemsize


def test_dtype_table_is_what_the_format_promises():
    # The on-disk strings are part of the format: adding is fine, renaming is a format change.
    expected = {
        "bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64",
        "float16", "bfloat16", "float32", "float64", "complex32", "complex64", "complex128",
        "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
        "float4_e2m1fn_x2",
    }  # fmt: skip
    assert set(DTYPES) <= expected
    for name in (
        "bool",
        "uint8",
        "int64",
        "float16",
        "bfloat16",
        "float32",
        "float64",
        "complex64",
    ):
        assert name in DTYPES


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_nan_payloads_and_signed_zeros_kept(store, dtype):
    bits_dtype = {2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]
    nan = float("nan")
    t = torch.tensor([nan, -nan, 0.0, -0.0, float("inf"), -float("inf")], dtype=dtype)
    # A NaN with an unusual payload: all mantissa bits set plus the sign bit.
    payload = torch.tensor([-1], dtype=bits_dtype).view(dtype)
    t = torch.cat([t, payload])
    got = round_trip(store, {"t": t})["t"]
    assert torch.equal(got.view(bits_dtype), t.view(bits_dtype))


def test_complex_nan_payload(store):
    t = torch.tensor(
        [complex(float("nan"), -0.0), complex(-0.0, float("nan"))], dtype=torch.complex128
    )
    got = round_trip(store, {"c": t})["c"]
    assert storage_bytes(got) == storage_bytes(t)


# -- layouts --------------------------------------------------------------------------------------


def test_views_with_offsets_share_one_storage(store):
    base = torch.arange(24, dtype=torch.float32)
    views = {
        "base": base,
        "tail": base[5:],
        "mat": base[4:16].view(3, 4),
        "col": base.view(4, 6)[:, 2],
        "transposed": base.view(4, 6).t(),
        "every_third": base[1::3],
    }
    got = round_trip(store, views)
    for name, want in views.items():
        assert_same_tensor(got[name], want)
        assert torch.equal(got[name], want)
        assert same_storage(got[name], got["base"])
    assert got["tail"].storage_offset() == 5
    assert not got["transposed"].is_contiguous()


def test_expanded_stride_zero_stores_only_the_base(store):
    base = torch.randn(3, 1)
    expanded = base.expand(3, 1000)
    got = round_trip(store, {"e": expanded, "scalar_expanded": torch.tensor(7.0).expand(5, 5)})
    assert got["e"].stride() == (1, 0)
    assert torch.equal(got["e"], expanded)
    assert ContentStoreReader(store).read_tensor_metadata("e").nbytes == 3 * 4
    assert got["scalar_expanded"].stride() == (0, 0)
    assert torch.equal(got["scalar_expanded"], torch.full((5, 5), 7.0))


def test_channels_last_keeps_its_strides(store):
    t = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    t3 = torch.randn(2, 3, 2, 4, 5).contiguous(memory_format=torch.channels_last_3d)
    got = round_trip(store, {"t": t, "t3": t3})
    assert got["t"].is_contiguous(memory_format=torch.channels_last)
    assert got["t3"].is_contiguous(memory_format=torch.channels_last_3d)
    assert_same_tensor(got["t"], t)
    assert_same_tensor(got["t3"], t3)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.empty(0),
        lambda: torch.empty(0, 5, dtype=torch.int64),
        lambda: torch.empty(3, 0, 2),
        lambda: torch.arange(10.0)[10:],  # empty, with an offset into a non-empty storage
    ],
    ids=["empty", "empty-2d", "empty-middle", "empty-offset"],
)
def test_empty_tensors(store, make):
    t = make()
    got = round_trip(store, {"t": t})["t"]
    assert tuple(got.shape) == tuple(t.shape)
    assert got.dtype == t.dtype
    assert got.numel() == 0


def test_zero_dim(store):
    t = torch.tensor(3.5, dtype=torch.float64)
    i = torch.tensor(-2, dtype=torch.int16)
    got = round_trip(store, {"t": t, "i": i})
    assert got["t"].dim() == 0 and got["t"].item() == 3.5
    assert got["i"].dim() == 0 and got["i"].item() == -2 and got["i"].dtype == torch.int16


def test_non_contiguous_slices(store):
    t = torch.randn(6, 7, 8)
    views = {
        "a": t[1:5:2, ::3, 2:],
        "b": t[..., 1],
        "c": t.permute(2, 0, 1)[::2],
        "d": t.diagonal(dim1=1, dim2=2),
    }
    got = round_trip(store, views)
    for name, want in views.items():
        assert_same_tensor(got[name], want)
        assert torch.equal(got[name], want)


def test_requires_grad_and_parameter(store):
    leaf = torch.randn(3, requires_grad=True)
    param = torch.nn.Parameter(torch.randn(2, 2))
    frozen = torch.nn.Parameter(torch.randn(2), requires_grad=False)
    nonleaf = leaf * 2
    got = round_trip(store, {"leaf": leaf, "param": param, "frozen": frozen, "nonleaf": nonleaf})
    assert got["leaf"].requires_grad and got["param"].requires_grad and got["nonleaf"].requires_grad
    assert not got["frozen"].requires_grad
    assert type(got["param"]) is torch.Tensor  # stored as a plain tensor, nothing unpickled
    assert torch.equal(got["param"].detach(), param.detach())
    assert torch.equal(got["nonleaf"].detach(), nonleaf.detach())
    assert got["leaf"].is_leaf  # a fresh leaf: gradients can flow into it
    got["leaf"].sum().backward()
    assert got["leaf"].grad is not None


def test_conj_and_neg_views_store_true_values(store):
    c = torch.randn(4, dtype=torch.complex64)
    conj = c.conj()
    neg_view = conj.imag  # a lazily negated view
    assert conj.is_conj() and neg_view.is_neg()
    got = round_trip(
        store,
        {
            "c": c,
            "conj": conj,
            "neg": neg_view,
            "conj_t": torch.randn(2, 3, dtype=torch.complex128).conj().t(),
        },
    )
    assert not got["conj"].is_conj()
    assert torch.equal(got["conj"], torch.conj_physical(c))
    assert torch.equal(got["conj"].imag, -c.imag)
    assert not got["neg"].is_neg()
    assert torch.equal(got["neg"], -c.imag)
    assert torch.equal(got["c"], c)
    # The original's storage holds the unconjugated values; the record must not point at it.
    assert not same_storage(got["c"], got["conj"])


def test_conj_view_of_a_slice(store):
    c = torch.randn(5, 4, dtype=torch.complex64)
    view = c[1:, ::2].conj()
    got = round_trip(store, {"v": view})["v"]
    assert torch.equal(got, view.resolve_conj())
    assert tuple(got.shape) == (4, 2)


# -- refused --------------------------------------------------------------------------------------


class MySubclass(torch.Tensor):
    pass


def _quantized() -> torch.Tensor:
    return torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.quint8)


def _nested() -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.nested.nested_tensor([torch.randn(2), torch.randn(3)])


def _fake() -> torch.Tensor:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return torch.randn(3)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(3, 3).to_sparse(),
        lambda: torch.randn(3, 3).to_sparse_csr(),
        _quantized,
        _nested,
        lambda: torch.randn(3).as_subclass(MySubclass),
        lambda: torch.empty(3, device="meta"),
        _fake,
        lambda: torch.empty(2, dtype=torch.bits8),
    ],
    ids=["sparse_coo", "sparse_csr", "quantized", "nested", "subclass", "meta", "fake", "bits8"],
)
def test_unsupported_tensors_refused(store, make):
    t = make()
    with ContentStoreWriter(store) as writer:
        with pytest.raises(UnsupportedTensorError) as info:
            writer.write_tensor("bad", t)
        assert "'bad'" in str(info.value)  # the message names the tensor
        assert isinstance(info.value, tensorcas.StoreError) and isinstance(info.value, TypeError)
    assert ContentStoreReader(store).list_tensors() == []


def test_non_tensor_refused(store):
    with ContentStoreWriter(store) as writer, pytest.raises(UnsupportedTensorError):
        writer.write_tensor("x", [1, 2, 3])  # type: ignore[arg-type]


# -- reading --------------------------------------------------------------------------------------


def test_device_argument(store):
    t = torch.randn(3, 4)
    with ContentStoreWriter(store) as writer:
        writer.write_tensor("t", t)
    reader = ContentStoreReader(store)
    for device in ("cpu", torch.device("cpu"), None):
        got = reader.read_tensor("t", device=device)
        assert got.device.type == "cpu"
        assert torch.equal(got, t)
    assert (
        reader.read_storage(tensorcas.hash_storage(t.untyped_storage()), device="cpu").device.type
        == "cpu"
    )


def test_cache_true_shares_storage_for_one_digest(store):
    a = torch.arange(8.0)
    b = a.clone()  # equal bytes, different storage
    with ContentStoreWriter(store) as writer:
        writer.write_tensor("a", a)
        writer.write_tensor("b", b)
        writer.write_tensor("a_view", a[2:])
        writer.write_tensor("other", torch.ones(8))
    cached = ContentStoreReader(store, cache=True)
    ra, rb, rv, ro = (cached.read_tensor(n) for n in ("a", "b", "a_view", "other"))
    assert same_storage(ra, rb) and same_storage(ra, rv)
    assert not same_storage(ra, ro)
    assert same_storage(cached.read_tensor("a"), ra)  # reading again hits the cache

    uncached = ContentStoreReader(store, cache=False)
    ua, ub, ua2 = uncached.read_tensor("a"), uncached.read_tensor("b"), uncached.read_tensor("a")
    assert not same_storage(ua, ub) and not same_storage(ua, ua2)
    assert torch.equal(ua, ub) and torch.equal(ua, a)
    ua.add_(1)  # no aliasing: mutating one result leaves the next read intact
    assert torch.equal(uncached.read_tensor("a"), a)


def test_read_storage_by_digest(store):
    t = torch.arange(6, dtype=torch.int32)
    with ContentStoreWriter(store) as writer:
        digest = writer.write_storage(t.untyped_storage())
    assert digest.startswith("blake3:") and len(digest) == 7 + 64
    assert digest == tensorcas.hash_storage(t.untyped_storage())
    reader = ContentStoreReader(store)
    for key in (digest, digest[len("blake3:") :]):
        storage = reader.read_storage(key)
        assert isinstance(storage, torch.UntypedStorage)
        assert bytes(storage) == bytes(t.untyped_storage())
    missing = "blake3:" + "0" * 64
    with pytest.raises(tensorcas.BlobNotFoundError) as info:
        reader.read_storage(missing)
    assert missing in str(info.value)
    assert isinstance(info.value, KeyError)
    # A foreign digest nothing was written under is a missing blob, like PyTorch's own store.
    with pytest.raises(tensorcas.BlobNotFoundError):
        reader.read_storage("md5:" + "0" * 32)
    for bad in ("blake3:XYZ", "blake3:" + "A" * 64, "not a digest", 12):
        with pytest.raises(tensorcas.InvalidDigestError):
            reader.read_storage(bad)  # type: ignore[arg-type]


def test_read_tensor_metadata(store):
    base = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    view = base.detach()[1:, 2:].t()
    with ContentStoreWriter(store) as writer:
        written = writer.write_tensor("m/view", view)
        writer.write_tensor("m/base", base)
    reader = ContentStoreReader(store)
    record = reader.read_tensor_metadata("m/view")
    assert record == written
    assert isinstance(record, tensorcas.TensorRecord)
    assert record.name == "m/view"
    assert record.dtype == "float64" and record.torch_dtype == torch.float64
    assert record.shape == (3, 3) and record.stride == (1, 5) and record.offset == 7
    assert record.requires_grad is False
    assert record.nbytes == 4 * 5 * 8
    assert record.blob == tensorcas.hash_storage(base.untyped_storage())
    assert reader.read_tensor_metadata("m/base").requires_grad is True
    with pytest.raises(tensorcas.TensorNotFoundError):
        reader.read_tensor_metadata("m/nothing")
