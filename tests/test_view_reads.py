"""``read_tensor(whole_storage=False)``: a view of a large blob read as its own bytes alone, on
disk and on object storage; the same values, a storage of its own, damage still found."""

from __future__ import annotations

import os
import threading

import pytest
import torch

import tensorcas
from tensorcas import format as fmt
from tensorcas.backends import MemoryBackend
from tensorcas.backends.local import LocalBackend
from tensorcas.errors import CorruptObjectError, StoreError

TABLE = torch.arange(256 * 1024, dtype=torch.float32).view(1024, 256)  # 1 MiB


def _views() -> dict[str, torch.Tensor]:
    return {
        "row": TABLE[700],
        "rows": TABLE[10:14],
        "column": TABLE[:, 3],
        "expanded": TABLE[5, :8].expand(4, 8),
        "empty": TABLE[4:4],
        "table": TABLE,
        "small": torch.arange(64.0)[10:20],
    }


def _check(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape and got.stride() == want.stride()
    assert torch.equal(got, want)


@pytest.fixture
def blob_bytes(monkeypatch):
    count = {"bytes": 0}
    original = LocalBackend.read_range

    def counting(self, key, offset, length):
        data = original(self, key, offset, length)
        count["bytes"] += len(data or b"")
        return data

    monkeypatch.setattr(LocalBackend, "read_range", counting)
    return count


def test_views_read_only_their_bytes_on_disk(tmp_path, blob_bytes):
    with tensorcas.ContentStoreWriter(str(tmp_path)) as writer:
        for name, t in _views().items():
            writer.write_tensor(name, t)
    reader = tensorcas.ContentStoreReader(str(tmp_path))
    for name, want in _views().items():
        blob_bytes["bytes"] = 0
        got = reader.read_tensor(name, whole_storage=False)
        _check(got, want)
        if name == "table":
            assert got.untyped_storage().nbytes() == TABLE.nbytes  # the whole blob anyway
            continue
        assert got.storage_offset() == 0
        span = got.untyped_storage().nbytes()
        assert span <= want.untyped_storage().nbytes() and blob_bytes["bytes"] == span
    assert reader.read_tensor("row", whole_storage=False).untyped_storage().nbytes() == 256 * 4
    # Read whole, the views still share one storage.
    a, b = reader.read_tensor("row"), reader.read_tensor("rows")
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def test_views_read_alone_share_nothing_and_verify_reads_whole(tmp_path):
    with tensorcas.ContentStoreWriter(str(tmp_path)) as writer:
        writer.write_tensor("row", TABLE[3])
        writer.write_tensor("g", TABLE[2].clone().requires_grad_())
    reader = tensorcas.ContentStoreReader(str(tmp_path))
    one, two = reader.read_tensor("row", whole_storage=False), reader.read_tensor("row", whole_storage=False)
    assert one.untyped_storage().data_ptr() != two.untyped_storage().data_ptr()
    assert reader.read_tensor("g", whole_storage=False).requires_grad
    verified = tensorcas.ContentStoreReader(str(tmp_path), verify=True).read_tensor("row", whole_storage=False)
    assert verified.untyped_storage().nbytes() == TABLE.nbytes
    _check(verified, TABLE[3])


def test_a_blob_of_another_size_is_refused(tmp_path):
    with tensorcas.ContentStoreWriter(str(tmp_path)) as writer:
        writer.write_tensor("row", TABLE[3])
    blobs = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "blobs") for f in fs]
    assert len(blobs) == 1
    os.chmod(blobs[0], 0o644)
    with open(blobs[0], "r+b") as f:
        f.truncate(TABLE.nbytes // 2)
    with pytest.raises(CorruptObjectError, match="holds"):
        tensorcas.ContentStoreReader(str(tmp_path)).read_tensor("row", whole_storage=False)


def test_a_view_on_object_storage_costs_its_own_bytes(s3_server, s3_url):
    from s3proxy import FaultProxy
    from tensorcas.store import open_backend

    with tensorcas.ContentStoreWriter(open_backend(s3_url, storage_options=s3_server.options())) as writer:
        for name, t in _views().items():
            writer.write_tensor(name, t)
    with FaultProxy(s3_server.endpoint) as proxy:
        reader = tensorcas.ContentStoreReader(open_backend(s3_url, storage_options=s3_server.options(proxy.endpoint)))
        for name, want in _views().items():
            _check(reader.read_tensor(name, whole_storage=False), want)
        proxy.answer_bytes = 0
        _check(reader.read_tensor("row", whole_storage=False), TABLE[700])
        assert proxy.answer_bytes < 16 << 10, proxy.answer_bytes
        proxy.answer_bytes = 0
        _check(reader.read_tensor("row"), TABLE[700])
        assert proxy.answer_bytes > TABLE.nbytes


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch build without CUDA")
def test_a_device_torch_lacks_is_a_store_error_as_for_a_whole_read(tmp_path):
    with tensorcas.ContentStoreWriter(str(tmp_path)) as writer:
        writer.write_tensor("row", TABLE[3])
    reader = tensorcas.ContentStoreReader(str(tmp_path))
    for whole in (True, False):
        with pytest.raises(StoreError, match="cannot be read onto device cuda"):
            reader.read_tensor("row", device="cuda", whole_storage=whole)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_every_kind_of_view_reads_back_as_a_whole_read_does(tmp_path):
    flat = torch.arange(64 * 1024, dtype=torch.float32)
    views = {
        "float8": flat.to(torch.float8_e4m3fn).view(256, 256)[3:5],
        "float8_t": flat.to(torch.float8_e5m2).view(256, 256).t()[2],
        "complex32": (flat[:32768] * (1 + 1j)).to(torch.complex32)[100:200],
        "bool": (flat % 3 == 0)[1000:1010],
        "float4": torch.arange(64 * 1024, dtype=torch.int32).to(torch.uint8).view(torch.float4_e2m1fn_x2)[10:20],
        "zero_d": flat[60000],
        "last": flat[-1],
        "empty_at_end": flat[flat.numel() :],
        "stride_0": flat[500:501].expand(10),
        "transposed": flat.view(256, 256).t()[:, 5:9],
        "packed": torch.arange(100.0)[3:7],
    }
    with tensorcas.ContentStoreWriter(str(tmp_path)) as writer:
        for name, t in views.items():
            writer.write_tensor(name, t)
    for options in ({}, {"cache": False}, {"mmap": True}):
        reader = tensorcas.ContentStoreReader(str(tmp_path), **options)
        for name, want in views.items():
            for device in (None, "cpu", "cpu:0", "meta"):
                got = reader.read_tensor(name, whole_storage=False, device=device)
                whole = reader.read_tensor(name, device=device)
                assert (got.dtype, got.shape, got.stride(), got.device) == (
                    want.dtype, want.shape, want.stride(), whole.device
                ), (name, device)
                if device != "meta":
                    assert got.untyped_storage().nbytes() <= whole.untyped_storage().nbytes()
                    if want.numel():
                        assert bytes(got.contiguous().view(-1).view(torch.uint8)) == bytes(
                            want.contiguous().view(-1).view(torch.uint8)
                        ), (name, options)


class _Counting(MemoryBackend):
    """An in-memory backend counting the looks at and reads of blobs and packs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def stat(self, key):
        if not key.startswith("logs/"):
            self.calls.append(f"stat {key}")
        return super().stat(key)

    def read_range(self, key, offset, length):
        if not key.startswith(("logs/", "tensorcas")):
            self.calls.append(f"read {key}")
        return super().read_range(key, offset, length)


def test_a_packed_view_costs_one_look_at_its_pack_and_one_read():
    backend = _Counting()
    with tensorcas.ContentStoreWriter(backend) as writer:
        writer.write_tensor("small", torch.arange(100.0)[3:7])
    reader = tensorcas.ContentStoreReader(backend)
    backend.calls.clear()
    _check(reader.read_tensor("small", whole_storage=False), torch.arange(100.0)[3:7])
    assert [c.split()[0] for c in backend.calls] == ["stat", "read"], backend.calls
    assert all(c.split()[1].startswith("packs/") for c in backend.calls), backend.calls


def test_a_damaged_place_in_the_logs_is_passed_over_as_for_a_whole_read():
    backend = MemoryBackend()
    want = torch.arange(100.0)[3:7]
    with tensorcas.ContentStoreWriter(backend) as writer:
        writer.write_tensor("small", want)
        writer.write_tensor("after", torch.arange(200.0) + 1)  # the pack goes on past the blob
    record = tensorcas.ContentStoreReader(backend).read_tensor_metadata("small")
    (place,) = tensorcas.ContentStoreReader(backend).store.blobs.packs.places(record.blob)
    # A log read before the writer's places the blob elsewhere in the pack, at another size.
    damaged = fmt.PackedBlob(record.blob, record.nbytes + 8, place.pack, place.offset + 4)
    backend.put_if_absent("logs/0.log", fmt.encode_header("0") + damaged.encode())
    reader = tensorcas.ContentStoreReader(backend)
    assert reader.store.blobs.packs.places(record.blob)[0].nbytes == record.nbytes + 8
    _check(reader.read_tensor("small"), want)
    _check(reader.read_tensor("small", whole_storage=False), want)


def test_a_place_of_another_size_at_the_same_offset_does_not_hide_the_sound_one():
    backend = MemoryBackend()
    want = torch.arange(100.0)[3:7]
    with tensorcas.ContentStoreWriter(backend) as writer:
        writer.write_tensor("small", want)
        writer.write_tensor("after", torch.arange(200.0) + 1)
    record = tensorcas.ContentStoreReader(backend).read_tensor_metadata("small")
    (place,) = tensorcas.ContentStoreReader(backend).store.blobs.packs.places(record.blob)
    damaged = fmt.PackedBlob(record.blob, record.nbytes + 8, place.pack, place.offset)
    backend.put_if_absent("logs/0.log", fmt.encode_header("0") + damaged.encode())
    for verify in (False, True):
        reader = tensorcas.ContentStoreReader(backend, verify=verify)
        _check(reader.read_tensor("small"), want)
        _check(reader.read_tensor("small", whole_storage=False), want)


def test_views_read_alone_while_gc_moves_their_blobs(tmp_path):
    from tensorcas.maintenance.gc import gc, rm

    loc = str(tmp_path)

    def view(i: int) -> torch.Tensor:
        return torch.full((256,), float(i))[i % 7 : i % 7 + 5]  # a view of a packed blob

    stop = threading.Event()
    failures: list[BaseException] = []

    def collect() -> None:
        while not stop.is_set():
            try:
                gc(loc, grace_seconds=0)
            except Exception as exc:  # any failure fails the test below
                failures.append(exc)
                return

    for round_ in range(3):
        with tensorcas.ContentStoreWriter(loc) as writer:
            for i in range(30):
                writer.write_tensor(f"r{round_}/{i}", view(100 * round_ + i))
        reader = tensorcas.ContentStoreReader(loc, cache=False)  # its index names the old pack
        with tensorcas.ContentStoreWriter(loc) as writer:  # a few blobs stay in use
            for i in range(0, 30, 10):
                writer.write_tensor(f"kept{round_}/{i}", view(100 * round_ + i))
        rm(loc, [f"r{round_}/"])
        collector = threading.Thread(target=collect)
        collector.start()
        try:
            for _ in range(20):
                for i in range(0, 30, 10):
                    _check(reader.read_tensor(f"kept{round_}/{i}", whole_storage=False), view(100 * round_ + i))
        finally:
            stop.set()
            collector.join()
            stop.clear()
        assert not failures, failures


def test_a_view_on_object_storage_costs_a_look_and_one_ranged_get(s3_server, s3_url):
    from s3proxy import FaultProxy
    from tensorcas.store import open_backend

    with tensorcas.ContentStoreWriter(open_backend(s3_url, storage_options=s3_server.options())) as writer:
        writer.write_tensor("row", TABLE[700])  # a loose blob
        writer.write_tensor("small", torch.arange(100.0)[3:7])  # a packed one
    with FaultProxy(s3_server.endpoint) as proxy:
        reader = tensorcas.ContentStoreReader(open_backend(s3_url, storage_options=s3_server.options(proxy.endpoint)))
        proxy.requests.clear()
        _check(reader.read_tensor("row", whole_storage=False), TABLE[700])
        assert [method for method, _, _ in proxy.requests] == ["HEAD", "GET"], proxy.requests
        proxy.requests.clear()
        _check(reader.read_tensor("small", whole_storage=False), torch.arange(100.0)[3:7])
        # Its pack looked at (a run of segments: listed) and read; no look for a loose copy.
        assert not any("blobs" in path for _, path, _ in proxy.requests), proxy.requests
        assert len(proxy.requests) <= 3, proxy.requests


def _error(read) -> tuple[type, str]:
    try:
        read()
    except CorruptObjectError as exc:
        return type(exc), str(exc)
    raise AssertionError("read a damaged blob")


@pytest.mark.parametrize("damage", ["cut pack", "no pack", "longer blob", "no blob"])
def test_damaged_copies_fail_as_a_whole_read_does(tmp_path, damage):
    with tensorcas.ContentStoreWriter(str(tmp_path)) as writer:
        writer.write_tensor("small", torch.arange(100.0)[3:7])
        writer.write_tensor("row", TABLE[7])
    name = "small" if "pack" in damage else "row"
    where = tmp_path / ("packs" if name == "small" else "blobs")
    for path in [os.path.join(d, f) for d, _, fs in os.walk(where) for f in fs]:
        os.chmod(path, 0o644)
        if damage.startswith("no"):
            os.remove(path)
        else:
            with open(path, "r+b") as f:
                f.truncate(100) if damage == "cut pack" else f.write(b"\0" * (TABLE.nbytes + 4))
    reader = tensorcas.ContentStoreReader(str(tmp_path), cache=False)
    whole = _error(lambda: reader.read_tensor(name))
    assert _error(lambda: reader.read_tensor(name, whole_storage=False)) == whole


@pytest.mark.parametrize("nbytes", [TABLE.nbytes, TABLE.nbytes + 1024])
def test_a_record_whose_view_claims_more_than_its_blob_is_refused_as_for_a_whole_read(tmp_path, nbytes):
    with tensorcas.ContentStoreWriter(str(tmp_path)) as writer:
        writer.write_tensor("table", TABLE)
    blob = tensorcas.ContentStoreReader(str(tmp_path)).read_tensor_metadata("table").blob
    (log,) = [os.path.join(tmp_path, "logs", f) for f in os.listdir(tmp_path / "logs")]
    os.chmod(log, 0o644)
    # Rows past the table's end, on a record of the blob's size or of a size it does not hold.
    record = fmt.TensorRecord("past", "float32", (2, 256), (256, 1), 1023 * 256, False, blob, nbytes)
    with open(log, "ab") as f:
        f.write(fmt.encode_put(record, 2**62))
    reader = tensorcas.ContentStoreReader(str(tmp_path))
    whole = _error(lambda: reader.read_tensor("past"))
    assert _error(lambda: reader.read_tensor("past", whole_storage=False)) == whole


def test_a_view_of_a_damaged_blob_costs_no_memory_for_the_whole_blob(tmp_path):
    import tracemalloc

    with tensorcas.ContentStoreWriter(str(tmp_path)) as writer:
        writer.write_tensor("row", TABLE[7])
    (path,) = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "blobs") for f in fs]
    os.chmod(path, 0o644)
    with open(path, "ab") as f:
        f.write(b"\0" * 4)  # longer than its record says
    reader = tensorcas.ContentStoreReader(str(tmp_path))
    tracemalloc.start()
    try:
        with pytest.raises(CorruptObjectError, match="holds"):
            reader.read_tensor("row", whole_storage=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < TABLE.nbytes // 4, peak
