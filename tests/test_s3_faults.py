"""Faults between the client and the S3 server, through a proxy on loopback: throttling, resets
mid-upload, lost answers, stalls, a server gone mid-write, wrong credentials, an endpoint that
does not answer.  Whatever happens, nothing acknowledged is lost and nothing half-written is
visible; what cannot be done is a clear ``StoreError`` with the client's error as its cause."""

from __future__ import annotations

import pytest
import torch

import tensorcas
from s3fixtures import FAST_RETRY, S3Server, free_port
from s3proxy import FaultProxy
from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas.backends.objectstore import MULTIPART_THRESHOLD, ObjectStoreBackend
from tensorcas.errors import AccessDeniedError, StoreError, StoreUnavailableError


@pytest.fixture
def proxy(s3_server: S3Server):
    with FaultProxy(s3_server.endpoint) as p:
        yield p


def _via(
    proxy: FaultProxy, s3_server: S3Server, url: str, timeout: str = "2s"
) -> ObjectStoreBackend:
    options = {**s3_server.options(proxy.endpoint), "connect_timeout": "1s", "timeout": timeout}
    return ObjectStoreBackend.from_url(url, options, retry=FAST_RETRY)


def _direct(s3_server: S3Server, url: str) -> ObjectStoreBackend:
    return ObjectStoreBackend.from_url(url, s3_server.options(), retry=FAST_RETRY)


def _is_put(method: str, path: str) -> bool:
    return method == "PUT"


def _consistent(s3_server: S3Server, url: str, acknowledged: dict[str, torch.Tensor]) -> None:
    """Seen without the proxy: every acknowledged tensor reads back, verify finds no damage."""
    reader = ContentStoreReader(_direct(s3_server, url), verify=True)
    for name, tensor in acknowledged.items():
        assert torch.equal(reader.read_tensor(name), tensor), name
    report = tensorcas.verify(_direct(s3_server, url))
    assert report.ok, report.findings


def test_throttling_is_retried_then_reported(proxy, s3_server, s3_url):
    backend = _via(proxy, s3_server, s3_url)
    done = {"a": torch.arange(10.0), "b": torch.randn(30_000)}
    proxy.fail("503", times=3)  # retried with backoff: the writes succeed
    with ContentStoreWriter(backend) as writer:
        for name, tensor in done.items():
            writer.write_tensor(name, tensor)
    assert proxy.count() > 3
    proxy.fail("503")  # throttled for good: a clear error, after bounded retries
    with pytest.raises(StoreUnavailableError, match="retries") as info:
        ContentStoreWriter(_via(proxy, s3_server, s3_url)).write_tensor("c", torch.randn(30_000))
    assert info.value.__cause__ is not None and isinstance(info.value, ConnectionError)
    proxy.heal()
    _consistent(s3_server, s3_url, done)


@pytest.mark.parametrize("size", [100, 30_000, MULTIPART_THRESHOLD // 4 + 100])
def test_a_reset_mid_upload_is_retried_and_never_half_visible(proxy, s3_server, s3_url, size):
    tensor = torch.randn(size)
    proxy.fail("reset-mid-body", times=2, when=_is_put)
    with ContentStoreWriter(_via(proxy, s3_server, s3_url)) as writer:
        writer.write_tensor("t", tensor)
    proxy.fail("reset-mid-body", when=_is_put)  # every upload cut: the write fails
    writer = ContentStoreWriter(_via(proxy, s3_server, s3_url))
    with pytest.raises(StoreError):
        writer.write_tensor("u", torch.randn(size))
    proxy.heal()
    _consistent(s3_server, s3_url, {"t": tensor})
    assert "u" not in ContentStoreReader(_direct(s3_server, s3_url)).list_tensors()


def test_lost_answers_to_conditional_puts_are_recognised(proxy, s3_server, s3_url):
    """The server stored the object but its answer was lost: the retried conditional put finds
    it there, and the writer sees that it is its own (same bytes), not a conflict."""
    tensors = {f"t{i}": torch.full((16 if i % 2 else 20_000,), float(i)) for i in range(6)}
    with ContentStoreWriter(_via(proxy, s3_server, s3_url)) as writer:
        writer.write_tensor("warmup", torch.zeros(1))
        proxy.fail("lose-answer", times=3, when=_is_put)
        for name, tensor in tensors.items():
            writer.write_tensor(name, tensor)
    proxy.heal()
    _consistent(s3_server, s3_url, tensors)
    names = ContentStoreReader(_direct(s3_server, s3_url)).list_tensors()
    assert names == ["warmup", *tensors]  # each record once


def test_a_stalled_read_is_retried(proxy, s3_server, s3_url):
    with ContentStoreWriter(_direct(s3_server, s3_url)) as writer:
        writer.write_tensor("t", torch.arange(50_000.0))
    proxy.stall_seconds = 1.5  # past the client's 1 s timeout
    proxy.fail("stall", times=1, when=lambda method, path: method == "GET")
    reader = ContentStoreReader(_via(proxy, s3_server, s3_url, timeout="1s"))
    assert torch.equal(reader.read_tensor("t"), torch.arange(50_000.0))


def test_the_server_gone_mid_write_loses_nothing_acknowledged(proxy, s3_server, s3_url):
    acknowledged: dict[str, torch.Tensor] = {}
    writer = ContentStoreWriter(_via(proxy, s3_server, s3_url))
    with pytest.raises(StoreUnavailableError):
        for i in range(200):
            tensor = torch.full((16 if i % 3 else 20_000,), float(i))
            if i == 7:
                proxy.fail("down")  # every connection from now on is cut at once
            writer.write_tensor(f"t{i}", tensor)
            acknowledged[f"t{i}"] = tensor
    assert len(acknowledged) == 7
    proxy.heal()
    _consistent(s3_server, s3_url, acknowledged)
    # The writer goes on after the outage: its next append lands after what is there.
    writer.write_tensor("after", torch.ones(4))
    writer.close()
    _consistent(s3_server, s3_url, {**acknowledged, "after": torch.ones(4)})


def test_wrong_credentials_are_a_clear_error(proxy, s3_server, s3_url):
    proxy.fail("403")
    with pytest.raises(AccessDeniedError, match="credentials") as info:
        ContentStoreWriter(_via(proxy, s3_server, s3_url))
    assert isinstance(info.value, PermissionError) and info.value.__cause__ is not None


def test_an_unreachable_endpoint_is_a_clear_error(s3_server, s3_url):
    options = {**s3_server.options(f"http://127.0.0.1:{free_port()}"), "connect_timeout": "1s"}
    backend = ObjectStoreBackend.from_url(s3_url, options, retry=FAST_RETRY)
    with pytest.raises(StoreUnavailableError, match="reached") as info:
        ContentStoreReader(backend)
    assert info.value.__cause__ is not None


def test_a_stalled_upload_is_sent_again_and_lands_once(proxy, s3_server, s3_url):
    """The client gives up on a stalled put and sends it again; the stalled one reaches the
    server later.  Each object is published once and the log holds each record once."""
    proxy.stall_seconds = 1.5  # past the client's 1 s timeout
    tensors = {"small": torch.arange(4.0), "big": torch.randn(30_000)}
    with ContentStoreWriter(_via(proxy, s3_server, s3_url, timeout="1s")) as writer:
        writer.write_tensor("warmup", torch.zeros(1))
        proxy.fail("stall", times=2, when=_is_put)
        for name, tensor in tensors.items():
            writer.write_tensor(name, tensor)
    proxy.heal()
    _consistent(s3_server, s3_url, tensors)
    assert ContentStoreReader(_direct(s3_server, s3_url)).list_tensors() == ["warmup", *tensors]


def test_a_timing_in_a_client_message_is_not_a_status_code():
    """"in 107.148503ms" once made an unreachable endpoint read as a busy service."""
    from tensorcas.backends.objectstore.failures import classify

    unreachable = RuntimeError("Error performing GET in 107.148503ms - HTTP error: error sending request")
    assert "could not be reached" in str(classify(unreachable, "reading", "x"))
    busy = RuntimeError("Server returned non-2xx status code: 503 Service Unavailable")
    assert "busy" in str(classify(busy, "reading", "x"))
