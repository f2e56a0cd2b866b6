"""``torch.ops.tensorcas.load_tensor``: replaying stored tensors inside graphs.

The operator must behave the same eagerly, under FakeTensorMode and inside torch.compile; its
reader context must nest and stay within its thread; outside any context it must still produce a
tensor of exactly the requested layout, for every dtype a graph might ask for.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

import tensorcas
from tensorcas import (
    ContentStoreWriter,
    ReaderContextError,
    TensorNotFoundError,
    load_tensor_reader,
)
from tensorcas.ops import current_reader

load = torch.ops.tensorcas.load_tensor.default


def write(loc: str, **tensors: torch.Tensor) -> None:
    with ContentStoreWriter(loc) as writer:
        for name, t in tensors.items():
            writer.write_tensor(name, t)


@pytest.fixture(autouse=True)
def _reset_dynamo():
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_inside_compiled_function(loc, backend):
    w = torch.randn(4, 3)
    write(loc, w=w)

    def f(x: torch.Tensor) -> torch.Tensor:
        weight = torch.ops.tensorcas.load_tensor(
            "w", (4, 3), (3, 1), dtype=torch.float32, device="cpu"
        )
        return x @ weight

    compiled = torch.compile(f, backend=backend, fullgraph=True)
    x = torch.randn(2, 4)
    with load_tensor_reader(loc):
        got = compiled(x)
    torch.testing.assert_close(got, x @ w)


def test_compiled_function_with_dtype_conversion(loc):
    w = torch.randn(5)
    write(loc, w=w)

    @torch.compile(backend="aot_eager", fullgraph=True)
    def f() -> torch.Tensor:
        return (
            torch.ops.tensorcas.load_tensor("w", (5,), (1,), dtype=torch.float64, device="cpu") * 2
        )

    with load_tensor_reader(loc):
        got = f()
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, w.double() * 2)


def test_under_fake_tensor_mode(loc):
    write(loc, x=torch.randn(2, 3).t())
    with load_tensor_reader(loc), FakeTensorMode():
        fake = load("x", (3, 2), (1, 3), dtype=torch.bfloat16, device="cpu")
    assert isinstance(fake, FakeTensor)
    assert (tuple(fake.shape), fake.stride(), fake.dtype) == ((3, 2), (1, 3), torch.bfloat16)
    # no reader at all: still fake, still the right metadata
    with FakeTensorMode():
        fake = load("absent", (4,), (2,), dtype=torch.int8, device="cpu")
    assert isinstance(fake, FakeTensor) and fake.stride() == (2,)


def test_nested_contexts_innermost_wins_and_outer_is_restored(tmp_path):
    outer, inner = str(tmp_path / "outer"), str(tmp_path / "inner")
    write(outer, x=torch.zeros(3))
    write(inner, x=torch.ones(3))
    assert current_reader() is None
    with load_tensor_reader(outer) as r_outer:
        assert torch.equal(load("x", (3,), (1,), dtype=torch.float32, device="cpu"), torch.zeros(3))
        with load_tensor_reader(inner) as r_inner:
            assert current_reader() is r_inner
            assert torch.equal(
                load("x", (3,), (1,), dtype=torch.float32, device="cpu"), torch.ones(3)
            )
        assert current_reader() is r_outer
        assert torch.equal(load("x", (3,), (1,), dtype=torch.float32, device="cpu"), torch.zeros(3))
        with pytest.raises(RuntimeError), load_tensor_reader(inner):
            raise RuntimeError("leaving by an exception restores the outer context too")
        assert current_reader() is r_outer
    assert current_reader() is None


def test_context_does_not_leak_into_other_threads(loc):
    write(loc, x=torch.full((64,), 5.0))
    entered, checked = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def holder() -> None:
        with load_tensor_reader(loc):
            entered.set()
            checked.wait(timeout=30)
            seen["holder"] = load("x", (64,), (1,), dtype=torch.float32, device="cpu")

    def other() -> None:
        entered.wait(timeout=30)
        seen["reader"] = current_reader()
        seen["other"] = load("x", (64,), (1,), dtype=torch.float32, device="cpu")
        checked.set()

    threads = [threading.Thread(target=holder), threading.Thread(target=other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert seen["reader"] is None
    assert torch.equal(seen["holder"], torch.full((64,), 5.0))
    assert not torch.equal(seen["other"], torch.full((64,), 5.0))  # random fallback, not the store
    assert current_reader() is None


@pytest.mark.parametrize(
    ("size", "stride"),
    [((4, 3), (3, 1)), ((3, 4), (1, 3)), ((12,), (1,))],
    ids=["wrong-size", "wrong-stride", "flattened"],
)
def test_size_or_stride_mismatch(loc, size, stride):
    write(loc, x=torch.randn(3, 4))
    with load_tensor_reader(loc), pytest.raises(ReaderContextError) as info:
        load("x", size, stride, dtype=torch.float32, device="cpu")
    message = str(info.value)
    assert "'x'" in message and "(3, 4)" in message and "(4, 1)" in message
    assert isinstance(info.value, tensorcas.StoreError)


def test_missing_name_in_context(loc):
    write(loc, x=torch.randn(2))
    with load_tensor_reader(loc), pytest.raises(TensorNotFoundError) as info:
        load("model/absent", (2,), (1,), dtype=torch.float32, device="cpu")
    assert "model/absent" in str(info.value)


def test_results_never_alias_each_other_or_the_reader_cache(loc):
    x = torch.randn(6)
    write(loc, x=x, x_view=x[2:])
    with load_tensor_reader(loc):
        a = load("x", (6,), (1,), dtype=torch.float32, device="cpu")
        a.add_(100)
        b = load("x", (6,), (1,), dtype=torch.float32, device="cpu")
        v = load("x_view", (4,), (1,), dtype=torch.float32, device="cpu")
    assert torch.equal(b, x) and torch.equal(v, x[2:])


def test_expanded_tensor_loaded_with_stride_zero(loc):
    x = torch.randn(3, 1).expand(3, 4)
    write(loc, x=x)
    with load_tensor_reader(loc):
        same = load("x", (3, 4), (1, 0), dtype=torch.float32, device="cpu")
        converted = load("x", (3, 4), (1, 0), dtype=torch.float64, device="cpu")
    assert same.stride() == (1, 0) and torch.equal(same, x)
    assert converted.stride() == (1, 0) and converted.dtype == torch.float64
    assert torch.equal(converted, x.double())


def test_dtype_conversion_keeps_gapped_strides(loc):
    base = torch.randn(5, 6)
    view = base[1:, ::2]
    write(loc, v=view)
    with load_tensor_reader(loc):
        got = load("v", (4, 3), (6, 2), dtype=torch.float16, device="cpu")
    assert got.stride() == (6, 2)
    assert torch.equal(got, view.half())


RANDOM_DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int32,
    torch.int64,
    torch.uint16,
    torch.uint64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.complex64,
    *(
        d
        for d in (getattr(torch, "float8_e8m0fnu", None), getattr(torch, "float4_e2m1fn_x2", None))
        if d is not None
    ),
]


@pytest.mark.parametrize("dtype", RANDOM_DTYPES, ids=str)
@pytest.mark.parametrize(
    ("size", "stride"),
    [
        ((2, 3), (3, 1)),
        ((3, 5), (1, 0)),
        ((4, 2), (0, 0)),
        ((2, 2), (1, 4)),
        ((0, 3), (3, 1)),
        ((), ()),
    ],
    ids=["contiguous", "expanded", "broadcast-scalar", "gapped", "empty", "0-dim"],
)
def test_random_fallback_outside_a_context(dtype, size, stride):
    assert current_reader() is None
    t = load("nothing/here", size, stride, dtype=dtype, device="cpu")
    assert (tuple(t.shape), t.stride(), t.dtype, t.device.type) == (size, stride, dtype, "cpu")


def test_random_fallback_values_vary():
    a = load("r", (256,), (1,), dtype=torch.float32, device="cpu")
    b = load("r", (256,), (1,), dtype=torch.float32, device="cpu")
    assert torch.isfinite(a).all() and not torch.equal(a, b)
    bools = load("r", (256,), (1,), dtype=torch.bool, device="cpu")
    assert bools.any() and not bools.all()


def test_hash_storage_inside_a_compiled_function(loc):
    digests: list[str] = []

    def f(x: torch.Tensor) -> torch.Tensor:
        y = x + 1
        digests.append(tensorcas.hash_storage(y.untyped_storage()))
        return y * 2

    compiled = torch.compile(f, backend="aot_eager")
    x = torch.arange(4, dtype=torch.float32)
    for _ in range(3):
        out = compiled(x)
    torch.testing.assert_close(out, (x + 1) * 2)
    expected = tensorcas.hash_storage((x + 1).untyped_storage())
    assert digests and set(digests) == {expected}


def test_views_load_at_offset_zero_like_the_fake(loc):
    """The fake implementation has storage offset 0; the real one must match, or compilers that
    rely on the fake's alignment (Inductor) fail on views stored with an offset."""
    base = torch.arange(10.0)
    write(loc, v=base[3:9].view(2, 3), e=base[1:].expand(2, 9))
    with load_tensor_reader(loc):
        v = load("v", (2, 3), (3, 1), dtype=torch.float32, device="cpu")
        e = load("e", (2, 9), (0, 1), dtype=torch.float32, device="cpu")
        e64 = load("e", (2, 9), (0, 1), dtype=torch.float64, device="cpu")
    assert v.storage_offset() == 0 and torch.equal(v, base[3:9].view(2, 3))
    assert (
        e.storage_offset() == 0 and e.stride() == (0, 1) and torch.equal(e, base[1:].expand(2, 9))
    )
    assert e64.storage_offset() == 0 and torch.equal(e64, base[1:].expand(2, 9).double())


def test_inductor_with_a_view_stored_at_an_offset(loc):
    base = torch.arange(10.0)
    write(loc, v=base[3:9].view(2, 3))

    @torch.compile(backend="inductor", fullgraph=True)
    def f(x: torch.Tensor) -> torch.Tensor:
        return (
            torch.ops.tensorcas.load_tensor("v", (2, 3), (3, 1), dtype=torch.float32, device="cpu")
            + x
        )

    with load_tensor_reader(loc):
        got = f(torch.ones(2, 3))
    assert torch.equal(got, base[3:9].view(2, 3) + 1)
