"""A store in an object-storage bucket: S3 and S3-compatible services (``s3://``), Google Cloud
Storage (``gs://``) and Azure Blob Storage (``az://``), through the ``obstore`` client.

Why ``obstore`` (the Python bindings of the Rust ``object_store`` crate, which Apache Arrow keeps):
its ``put(..., mode="create")`` is a real conditional put (``If-None-Match: *``), which publishing
a blob needs; it does multipart uploads, ranged and concurrent reads and retries with backoff
itself; it speaks S3, GCS and Azure with one API and reads each service's standard environment
variables; and it releases the GIL during requests, so a pool of threads reads in parallel.
``s3fs``/fsspec has no conditional put and is asyncio on top of aiobotocore.  The throughput of
this backend against obstore's own calls on the same server is measured by
``benchmarks/s3_bench.py``.

The core (get, read a range, stat, put-if-absent, delete, list) maps to one request each, or two
where S3 cannot say in one (a delete that reports whether something was there; a stat of a key
that may be a run of segments, below, and is not plain).

Object stores cannot append, so this backend appends the way they allow: a logical object that
grows (a log, a pack) is a run of immutable *segments*, ``<key>.seg/<end offset, 20 digits>``,
each published with one conditional put.  The first, empty, ``<key>.seg/00000000000000000000``
marks its creation; each append adds the segment holding its bytes, named by the logical offset
where they end.  So an append lands whole or not at all (a writer killed mid-request leaves no
torn line), and a segment is never overwritten.  ``get``, ``read_range``, ``stat`` and ``list``
of the logical key behave exactly as an appended object: the size is the last segment's end, the
modification time the last segment's, ``list`` shows the logical key only.  The segments of a
key form a chain (each one's size is its end minus the previous end, starting at the empty first
segment); only that chain is the object, so a segment planted out of place is ignored, and
deleting the first segment removes the object.  Segment lists are cached per key; a read within
the known end costs no listing, a ``stat`` one listing of the newest segments.  When its writer
closes it, a log or pack becomes one plain object of the same bytes (``_consolidate``), so a
closed log costs one request to list and one to read however many appends made it.

Reading a whole object (a blob) is one ``GET``, or for objects over :data:`READ_PART_SIZE` one
``GET`` per range, in parallel; no ``HEAD`` comes first: the size a ``GET``'s answer reports is
checked against the size the caller expects before the body is read, and the body of a single
``GET`` becomes the caller's memory without another copy (``buffers.py``).

Objects over :data:`MULTIPART_THRESHOLD` are uploaded in parallel multipart parts.  A multipart upload becomes visible only when
completed, so readers never see a part of it; it is published if a check just before finds the
key absent (this client offers no conditional completion).  Two writers racing to publish the
same large key may therefore both upload it, the second replacing the first: tensorcas writes
large objects only under content-addressed keys (blobs, whose bytes are the same whoever writes
them) and under the unique names of gc's moved-aside copies.  Small objects (records, segments,
the marker) use the true conditional put.

gc moves objects aside and back by the service's own copy where it is done when it answers
(S3's ``CopyObject``, up to 5 GiB; ``copy`` of the backend, the ``Copying`` ability), so no
blob's bytes pass through the client; a conditional copy (S3 with ``copy_if_not_exists``) where
configured, otherwise a check of the target just before, as for a multipart upload.  Azure's
``Copy Blob`` may still be running when it answers, so there gc copies through the client.

Failures: obstore retries 5xx answers (503 SlowDown included), dropped connections and timeouts
with exponential backoff, at most :data:`DEFAULT_RETRY` allows, and this backend sends a put
again when its connection failed (obstore does not: a put is not safe to repeat in general; a
conditional one is, since a landed first attempt makes the second find the object there).  What
still fails is raised as a :class:`~tensorcas.errors.ObjectStoreError` subclass, with obstore's
error as ``__cause__``.

Modules, importing downward only: ``failures`` (obstore's errors as StoreErrors; resending a
put), ``config`` (URL, settings and environment), ``segments`` (segment names, chains, the
appender), ``cache`` (local copies of objects read whole), ``buffers`` (a response's buffer handed
over), ``backend`` (the backend class).
"""

from __future__ import annotations

from .backend import (
    COPY_LIMIT,
    MAX_CONCURRENCY,
    MULTIPART_THRESHOLD,
    PART_SIZE,
    READ_PART_SIZE,
    ObjectStoreBackend,
)
from .cache import CACHE_MIN_BYTES
from .config import DEFAULT_RETRY, SCHEMES, is_url
from .segments import CONSOLIDATE_LIMIT, SEGMENTS, segment_key

__all__ = [
    "CACHE_MIN_BYTES",
    "CONSOLIDATE_LIMIT",
    "COPY_LIMIT",
    "DEFAULT_RETRY",
    "MAX_CONCURRENCY",
    "MULTIPART_THRESHOLD",
    "PART_SIZE",
    "READ_PART_SIZE",
    "SCHEMES",
    "SEGMENTS",
    "ObjectStoreBackend",
    "is_url",
    "segment_key",
]
