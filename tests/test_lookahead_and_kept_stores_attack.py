"""Attacks on the looks for stored blobs made ahead of their records (``Blobs.look_ahead``), on
the stores a process keeps open between loads (``dcp/opened.py``), and on ``delete_tensors``.

Each test is a way a concurrent writer, a concurrent gc, a store made again, or an unusual
caller could once make the store lose or misreport data.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from tensorcas import ContentStoreReader, ContentStoreWriter
from tensorcas.backends.objectstore import ObjectStoreBackend
from tensorcas.dcp import catalog, opened
from tensorcas.errors import InvalidNameError, TensorNotFoundError
from tensorcas.format import blob_key
from tensorcas.hashing import hash_storage
from tensorcas.store import open_backend


def _backend(s3_server, url: str) -> ObjectStoreBackend:
    backend = open_backend(url, storage_options=s3_server.options())
    assert isinstance(backend, ObjectStoreBackend)
    return backend


def test_the_check_after_a_record_never_takes_another_writers_look_from_before_it(s3_server, s3_url):
    """Two writers share one store (a kept store, two threads saving).  The second one's looks
    ahead found a blob stored; gc then collected it; the first writer put the same bytes again
    and gc collected that copy too before its record went out.  The check after its record must
    look now and store the bytes again, not take the other writer's answer from before."""
    backend = _backend(s3_server, s3_url)
    writer = ContentStoreWriter(backend)
    writer.write_tensor("warm", torch.zeros(1))
    g = torch.Generator().manual_seed(11)
    tensor, other = torch.randn(300_000, generator=g), torch.randn(300_000, generator=g)
    nbytes = tensor.untyped_storage().nbytes()
    digest = hash_storage(tensor.untyped_storage())
    for t in (tensor, other):  # copies no log names (a writer that crashed before its records)
        backend.put_if_absent(blob_key(hash_storage(t.untyped_storage())), [memoryview(t.numpy().tobytes())])

    # The other writer, on a thread of its own, looks ahead for both while they are stored.
    wanted = [(digest, nbytes), (hash_storage(other.untyped_storage()), nbytes)]
    looker = threading.Thread(target=writer.store.blobs.look_ahead, args=(wanted,))
    looker.start()
    looker.join()
    backend.delete(blob_key(digest))  # gc collects the copy no log names

    real_put = writer._log.put

    def collected_before_record(record, packed=None):
        backend.delete(blob_key(digest))  # gc (grace 0) collects the new copy before its record
        return real_put(record, packed)

    writer._log.put = collected_before_record  # type: ignore[method-assign]
    writer.write_tensor("t", tensor)
    writer._log.put = real_put  # type: ignore[method-assign]
    writer.close()
    reader = ContentStoreReader(_backend(s3_server, s3_url), verify=True)
    assert torch.equal(reader.read_tensor("t"), tensor)


def test_a_store_on_s3_removed_and_made_again_is_not_loaded_from_its_old_logs(s3_server, s3_url, s3_env):
    """A load keeps its store open; the store is removed and made again at the same URL within
    the second its marker was written (object storage gives marker times to the second), so the
    marker looks the same.  The next load must not list what the removed store held."""
    client = s3_server.client()
    prefix = s3_url.split("/", 3)[3] + "/"
    bucket = s3_url.split("/")[2]
    for _ in range(5):  # all within one second of the clock (retried if it ticks over)
        time.sleep(1.02 - time.time() % 1)
        with ContentStoreWriter(s3_url) as w:
            w.write_tensor("old", torch.ones(3))
        first = catalog.open_reader(s3_url)
        assert first is not None and first.list_tensors() == ["old"]
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        for item in listed:
            client.delete_object(Bucket=bucket, Key=item["Key"])
        with ContentStoreWriter(s3_url) as w:
            w.write_tensor("new", torch.zeros(2))
        kept = opened._kept.get((s3_url, False, True))
        assert kept is not None
        if kept.identity == opened._identity(s3_url, kept.store):
            break
        opened.forget()
        s3_url = s3_url + "x"
        prefix = s3_url.split("/", 3)[3] + "/"
    else:
        pytest.skip("the clock ticked over in every try")
    try:
        second = catalog.open_reader(s3_url)
        assert second is not None
        assert second.list_tensors() == ["new"]
        assert torch.equal(second.read_tensor("new"), torch.zeros(2))
    finally:
        opened.forget()


class _SameAsAll(str):
    """A name that claims to equal every other name of its kind (one hash for all)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str)

    def __hash__(self) -> int:
        return 0


def test_delete_tensors_removes_each_name_given_whatever_its_str_subclass_says(tmp_path):
    with ContentStoreWriter(tmp_path / "s") as writer:
        for name in ("a", "b", "c"):
            writer.write_tensor(name, torch.ones(1))
        writer.delete_tensors([_SameAsAll("a"), _SameAsAll("b")])
    reader = ContentStoreReader(tmp_path / "s")
    assert reader.list_tensors() == ["c"]


def test_delete_tensors_given_one_name_as_a_str_removes_nothing(tmp_path):
    """A bare str is an iterable of one-letter names: taken as such, ``delete_tensors("ab")``
    would remove the tensors "a" and "b"."""
    with ContentStoreWriter(tmp_path / "s") as writer:
        for name in ("a", "b", "ab"):
            writer.write_tensor(name, torch.ones(1))
        with pytest.raises(InvalidNameError, match="a list of names"):
            writer.delete_tensors("ab")
    reader = ContentStoreReader(tmp_path / "s")
    assert reader.list_tensors() == ["a", "b", "ab"]
    with pytest.raises(TensorNotFoundError):
        reader.read_tensor_metadata("missing")


def test_looks_ahead_cut_short_leave_no_answer_for_a_later_check(s3_server, s3_url):
    """An interrupt (Ctrl-C) while the looks ahead come back: those already back must not be
    kept, or a later look of this thread (the check after some later record) takes them."""
    backend = _backend(s3_server, s3_url)
    writer = ContentStoreWriter(backend)
    writer.write_tensor("warm", torch.zeros(1))
    g = torch.Generator().manual_seed(12)
    tensors = [torch.randn(300_000, generator=g) for _ in range(2)]
    wanted = []
    for t in tensors:
        digest = hash_storage(t.untyped_storage())
        backend.put_if_absent(blob_key(digest), [memoryview(t.numpy().tobytes())])
        wanted.append((digest, t.untyped_storage().nbytes()))
    blobs = writer.store.blobs
    real = blobs._find_stored_now

    def interrupted(digest, nbytes):
        if digest == wanted[1][0]:
            time.sleep(0.2)  # the first answer is back by then
            raise KeyboardInterrupt
        return real(digest, nbytes)

    blobs._find_stored_now = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        blobs.look_ahead(wanted)
    del blobs._find_stored_now
    backend.delete(blob_key(wanted[0][0]))  # collected since
    assert blobs.find_stored(*wanted[0]) == (False, None)
    writer.close()


def test_a_batch_cut_short_confirms_its_records_by_looks_made_now(s3_server, s3_url, monkeypatch):
    """A batch whose append fails: the records appended before are confirmed even so.  A blob
    gc took meanwhile must be stored again, not taken as stored on a look made ahead for a
    later tensor of the same bytes that the batch never reached."""
    from tensorcas.hashing import HashAhead

    real_ready = HashAhead.ready

    def all_ready(self, after):  # every storage hashed by each turn: the looks are the same each run
        for future in list(self._futures.values()):
            future.result()
        return real_ready(self, after)

    monkeypatch.setattr(HashAhead, "ready", all_ready)
    g = torch.Generator().manual_seed(13)
    x, w, y = (torch.randn(300_000, generator=g) for _ in range(3))
    batch = [("x", x), ("w", w), ("y", y), ("x2", x.clone()), ("w2", w.clone())]
    backend = _backend(s3_server, s3_url)
    writer = ContentStoreWriter(backend)
    writer.write_tensors(batch)  # names that hold blobs of these sizes: hashed first next time
    writer.close()
    writer = ContentStoreWriter(_backend(s3_server, s3_url))
    real_put = writer._log.put
    gone = blob_key(hash_storage(x.untyped_storage()))

    def fail_at_y(record, packed=None):
        if record.name == "y":
            writer.store.backend.delete(gone)  # gc took x's blob after x's record
            raise OSError("the append of y failed")
        return real_put(record, packed)

    writer._log.put = fail_at_y  # type: ignore[method-assign]
    with pytest.raises(OSError, match="append of y"):
        writer.write_tensors(batch)
    writer.close()
    reader = ContentStoreReader(_backend(s3_server, s3_url), verify=True)
    assert torch.equal(reader.read_tensor("x"), x)
