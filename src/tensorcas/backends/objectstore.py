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

Objects over :data:`MULTIPART_THRESHOLD` are uploaded in parallel multipart parts; objects over
:data:`READ_PART_SIZE` are read in parallel ranges.  A multipart upload becomes visible only when
completed, so readers never see a part of it; it is published if a check just before finds the
key absent (this client offers no conditional completion).  Two writers racing to publish the
same large key may therefore both upload it, the second replacing the first: tensorcas writes
large objects only under content-addressed keys (blobs, whose bytes are the same whoever writes
them) and under the unique names of gc's moved-aside copies.  Small objects (records, segments,
the marker) use the true conditional put.

Failures: obstore retries 5xx answers (503 SlowDown included), dropped connections and timeouts
with exponential backoff, at most :data:`DEFAULT_RETRY` allows, and this backend sends a put
again when its connection failed (obstore does not: a put is not safe to repeat in general; a
conditional one is, since a landed first attempt makes the second find the object there).  What
still fails is raised as a :class:`~tensorcas.errors.ObjectStoreError` subclass, with obstore's
error as ``__cause__``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from ..errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ObjectStoreError,
    StoreError,
    StoreUnavailableError,
    UnsupportedLocationError,
)
from .base import Appender, Appending, Backend, Data, ObjectInfo, chunks_of

#: URL schemes this backend opens (obstore's names for S3, Google Cloud Storage and Azure).
SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss")

#: Objects larger than this are uploaded in parallel multipart parts.
MULTIPART_THRESHOLD = 16 << 20
#: The size of each part of a multipart upload.
PART_SIZE = 8 << 20
#: Objects up to this size are read in one request; larger ones in ranges of this size, several
#: at once (S3's guidance for throughput).  Not smaller: each ranged request costs a round trip,
#: and some servers (moto's among them) read the whole object for each range.
READ_PART_SIZE = 32 << 20
#: Requests one backend has in flight at once for one large object or a run of segments.
MAX_CONCURRENCY = 8

#: Retries of a failed request (5xx, dropped connection, timeout): exponential backoff from
#: 100 ms to 5 s with jitter, given up after 8 retries or 60 s, whichever comes first.
DEFAULT_RETRY: dict[str, Any] = {
    "max_retries": 8,
    "retry_timeout": timedelta(seconds=60),
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=5),
        "base": 2,
    },
}

#: With a cache directory, objects read whole from this size up are kept on the local disk.
CACHE_MIN_BYTES = 1 << 20

#: A closed log or pack up to this size is consolidated into one object (see ``_SegmentAppender``).
CONSOLIDATE_LIMIT = 64 << 20

#: What separates a logical key from its segments' names.
SEGMENTS = ".seg/"
_END_DIGITS = 20

# Keys of ``storage_options`` that configure the HTTP client rather than the service.
_CLIENT_KEYS = frozenset(
    {
        "allow_http",
        "allow_invalid_certificates",
        "connect_timeout",
        "default_content_type",
        "default_headers",
        "http1_only",
        "http2_only",
        "pool_idle_timeout",
        "pool_max_idle_per_host",
        "proxy_url",
        "proxy_ca_certificate",
        "proxy_excludes",
        "read_timeout",
        "root_certificate",
        "timeout",
        "user_agent",
    }
)


def is_url(location: str) -> bool:
    """Whether ``location`` has a URL scheme (``scheme://...``, or an object store's scheme with
    slashes missing, ``s3:bucket``) rather than being a path."""
    scheme, sep, _ = location.partition("://")
    if sep:
        return scheme.isascii() and scheme.replace("+", "").replace("-", "").isalnum()
    return location.partition(":")[0].lower() in SCHEMES and ":" in location


def segment_key(key: str, end: int) -> str:
    """The name of the segment of ``key`` that ends at logical offset ``end``."""
    return f"{key}{SEGMENTS}{end:0{_END_DIGITS}d}"


def _split_segment(path: str) -> tuple[str, int] | None:
    """``(logical key, end)`` if ``path`` names a segment, else ``None``."""
    key, sep, tail = path.partition(SEGMENTS)
    if not sep or not key or len(tail) != _END_DIGITS or not tail.isdigit():
        return None
    return key, int(tail)


# A segment as listed: (end, size, mtime).
_Listed = tuple[int, int, float]
# A logical object's chain: (end, mtime) of each segment in order, the empty first one included.
_Chain = list[tuple[int, float]]


def _chain(listed: list[_Listed]) -> _Chain | None:
    """The chain of segments starting at the empty first one, each continuing the previous;
    ``None`` if there is no first segment (the object does not exist)."""
    chain: _Chain = []
    for end, size, mtime in sorted(listed):
        previous = chain[-1][0] if chain else 0
        if not chain:
            if end != 0 or size != 0:
                return None
        elif end <= previous or size != end - previous:
            break  # not a continuation: the object ends here
        chain.append((end, mtime))
    return chain or None


def _timestamp(meta: Mapping[str, Any]) -> float:
    return float(meta["last_modified"].timestamp())


class ObjectStoreBackend(Backend, Appending):
    """Objects under a prefix of a bucket, through an obstore store.

    Open one with :meth:`from_url`; or wrap an obstore store built by hand (any obstore store
    works, which is how the tests also run the contract on obstore's in-memory store).
    """

    def __init__(
        self,
        store: Any,
        location: str,
        *,
        max_concurrency: int = MAX_CONCURRENCY,
        retry: Mapping[str, Any] | None = None,
        appends_under: tuple[str, ...] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        import obstore

        self._obs = obstore
        self.store = store
        self.location = location
        self._segments: dict[str, _Chain] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=max_concurrency, thread_name_prefix="tensorcas-obj"
        )
        self._max_concurrency = max_concurrency
        self._appends_under = appends_under
        self._cache = None if cache_dir is None else os.path.abspath(os.fspath(cache_dir))
        retry = DEFAULT_RETRY if retry is None else retry
        backoff = retry.get("backoff", DEFAULT_RETRY["backoff"])
        self._put_retries = int(retry.get("max_retries", DEFAULT_RETRY["max_retries"]))
        self._backoff = (
            _seconds(backoff.get("init_backoff", timedelta(milliseconds=100))),
            _seconds(backoff.get("max_backoff", timedelta(seconds=5))),
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        retry: Mapping[str, Any] | None = None,
        appends_under: tuple[str, ...] | None = None,
    ) -> ObjectStoreBackend:
        """The bucket and prefix ``url`` names (``s3://bucket/prefix``, ``gs://...``, ``az://...``).

        Configuration comes from the service's standard environment (``AWS_ENDPOINT_URL``,
        ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``,
        ``AWS_PROFILE`` when boto3 is installed; ``GOOGLE_*``; ``AZURE_*``), then from
        ``storage_options``, which win: obstore's configuration keys (``endpoint``,
        ``access_key_id``, ``region``, ``skip_signature``...) and its HTTP client's
        (``allow_http``, ``timeout``...).  ``anon=True`` (or ``skip_signature=True``) reads a
        public bucket without credentials.  ``retry`` replaces :data:`DEFAULT_RETRY`.
        ``appends_under``: key prefixes that hold every appended object (a store passes its logs'
        and packs' directories), so that a key elsewhere costs no look for segments.
        ``storage_options["cache_dir"]``: a local directory that keeps a copy of each object of
        at least :data:`CACHE_MIN_BYTES` read whole (see :meth:`read_into`).
        """
        scheme = url.partition("://")[0].lower()
        if scheme not in SCHEMES:
            raise UnsupportedLocationError(
                f"unsupported location {url!r}: tensorcas opens local directories, memory:// and "
                f"object storage ({', '.join(s + '://' for s in SCHEMES)})"
            )
        parts = urlsplit(url)
        if not parts.netloc:
            raise UnsupportedLocationError(
                f"location {url!r} names no bucket; write {scheme}://BUCKET/PREFIX"
            )
        try:
            from obstore.store import from_url
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise UnsupportedLocationError(
                f"opening {url} needs the obstore package: pip install 'tensorcas[s3]'"
            ) from exc
        options = dict(storage_options or {})
        client: dict[str, Any] = {k: options.pop(k) for k in list(options) if k in _CLIENT_KEYS}
        cache_dir = options.pop("cache_dir", None)
        if options.pop("anon", False):
            options["skip_signature"] = True
        kwargs: dict[str, Any] = {}
        if scheme in ("s3", "s3a"):
            _aws_environment(options, client, kwargs)
        location = f"{scheme}://{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
        with _errors("opening", location):
            store = from_url(  # type: ignore[call-overload]
                url,
                config=options or None,
                client_options=client or None,
                retry_config=dict(retry if retry is not None else DEFAULT_RETRY),
                **kwargs,
            )
        return cls(store, location, retry=retry, appends_under=appends_under, cache_dir=cache_dir)

    def _where(self, key: str) -> str:
        return f"{self.location}/{key}"

    # -- plain objects ------------------------------------------------------------------------

    def _head(self, key: str) -> ObjectInfo | None:
        with _errors("inspecting", self._where(key)):
            try:
                meta = self._obs.head(self.store, key)
            except FileNotFoundError as exc:
                _unless_bucket_missing(exc, self.location)
                return None
        return ObjectInfo(int(meta["size"]), _timestamp(meta))

    def _get_range(self, key: str, start: int, end: int) -> bytes | None:
        """Bytes ``start:end`` of a plain object (fewer at its end), ``None`` if absent."""
        buffer = self._get_buffer(key, start, end)
        return None if buffer is None else bytes(buffer)

    def _get_buffer(self, key: str, start: int, end: int) -> memoryview | None:
        """Like :meth:`_get_range`, as a view of the client's own buffer (no copy)."""
        if end <= start:
            return memoryview(b"") if self._head(key) is not None else None
        with _errors("reading", self._where(key)):
            try:
                return memoryview(self._obs.get_range(self.store, key, start=start, end=end))
            except FileNotFoundError as exc:
                _unless_bucket_missing(exc, self.location)
                return None
            except self._obs.exceptions.GenericError as exc:
                if "416" in str(exc):  # the range starts at or past the end: the object is there
                    return memoryview(b"")
                raise

    def _put(self, key: str, data: Data, *, create: bool) -> bool:
        """Publish ``data`` under ``key``: conditionally (``create``) or replacing what is there."""
        exc_type = self._obs.exceptions.AlreadyExistsError
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = memoryview(data).cast("B")
            if body.nbytes <= MULTIPART_THRESHOLD:
                mode = "create" if create else "overwrite"
                try:
                    self._resending(
                        key,
                        lambda: self._obs.put(
                            self.store, key, body, mode=mode, use_multipart=False
                        ),
                    )
                except exc_type:
                    return False
                return True
            return self._put_large(key, lambda: iter([body]), create)
        # Pieces may be views of a buffer their producer reuses: copy each as it is taken.
        pieces = chunks_of(data)
        head: list[bytes] = []
        total = 0
        for piece in pieces:
            head.append(bytes(piece))
            total += len(head[-1])
            if total > MULTIPART_THRESHOLD:
                rest = itertools.chain(head, (bytes(p) for p in pieces))
                return self._put_large(key, lambda rest=rest: rest, create, again=False)  # type: ignore[misc]
        return self._put(key, b"".join(head), create=create)

    def _put_large(
        self,
        key: str,
        pieces: Callable[[], Iterator[bytes | memoryview]],
        create: bool,
        *,
        again: bool = True,
    ) -> bool:
        if create and self._head(key) is not None:
            return False
        upload = functools.partial(
            self._obs.put,
            self.store,
            key,
            use_multipart=True,
            chunk_size=PART_SIZE,
            max_concurrency=self._max_concurrency,
        )
        if again:
            self._resending(key, lambda: upload(pieces()))
        else:
            with _errors("writing", self._where(key)):
                upload(pieces())
        return True

    def _resending(self, key: str, put: Callable[[], object]) -> None:
        """Run ``put``, sent again when the connection failed (obstore resends only requests that
        are safe to repeat; a put is, here: a conditional one that landed before its answer was
        lost finds itself there, and the caller recognises its own bytes)."""
        delay, longest = self._backoff
        for attempt in itertools.count():
            try:
                with _errors("writing", self._where(key)):
                    put()
                return
            except StoreUnavailableError as exc:
                if attempt >= self._put_retries or not _connection_failed(exc.__cause__):
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, longest)

    # -- segments -------------------------------------------------------------------------------

    def _list_segments(self, key: str, after: int | None = None) -> list[_Listed]:
        """The segments of ``key`` as listed (those ending after ``after``, if given)."""
        offset = None if after is None else segment_key(key, after)
        out: list[_Listed] = []
        with _errors("listing", self._where(key + SEGMENTS)):
            for batch in self._obs.list(
                self.store, prefix=key + SEGMENTS.rstrip("/"), offset=offset, chunk_size=1000
            ):
                for meta in batch:
                    split = _split_segment(meta["path"])
                    if split is not None and split[0] == key:
                        out.append((split[1], int(meta["size"]), _timestamp(meta)))
        return out

    def _refresh_segments(self, key: str) -> _Chain | None:
        """The chain of ``key`` now; one listing of the newest segments when it is cached (if
        the last known segment is still there, every earlier one is: ``delete`` removes the last
        one first), a full listing otherwise."""
        with self._lock:
            cached = self._segments.get(key)
        chain: _Chain | None = None
        if cached is not None and len(cached) >= 2:
            newer = self._list_segments(key, after=cached[-2][0])
            if newer and min(newer)[0] == cached[-1][0]:
                known = [
                    (end, end - prev, mtime)
                    for (prev, _), (end, mtime) in itertools.pairwise(cached)
                ]
                chain = _chain([(0, 0, cached[0][1]), *known[:-1], *newer])
        if chain is None:
            chain = _chain(self._list_segments(key))
        with self._lock:
            if chain is None:
                self._segments.pop(key, None)
            else:
                self._segments[key] = chain
        return chain

    def _read_segments(self, key: str, chain: _Chain, start: int, end: int) -> bytes | None:
        """Bytes ``start:end`` of a segmented object; ``None`` if a segment vanished."""
        wanted = []
        previous = 0
        for seg_end, _ in chain[1:]:
            if seg_end > start and previous < end:
                wanted.append(
                    (
                        segment_key(key, seg_end),
                        max(start, previous) - previous,
                        min(end, seg_end) - previous,
                    )
                )
            previous = seg_end
            if previous >= end:
                break
        if not wanted:
            return b""
        if len(wanted) == 1:
            pieces = [self._get_range(*wanted[0])]
        else:
            pieces = list(self._pool.map(lambda w: self._get_range(*w), wanted))
        if any(p is None for p in pieces):
            return None
        return b"".join(p for p in pieces if p is not None)

    def _segmented_range(self, key: str, offset: int, length: int) -> bytes | None:
        """Bytes of a key known to be segmented; a cached chain is used while the range lies
        within it, re-listed past its end or when a segment vanished."""
        with self._lock:
            chain = self._segments.get(key)
        for attempt in range(2):
            if chain is None or attempt or offset + length > chain[-1][0]:
                chain = self._refresh_segments(key)
                if chain is None:
                    return None
            data = self._read_segments(key, chain, offset, min(offset + length, chain[-1][0]))
            if data is not None:
                return data
        return None

    # -- the core ------------------------------------------------------------------------------

    def _known_segmented(self, key: str) -> bool:
        with self._lock:
            return key in self._segments

    def _may_be_segmented(self, key: str) -> bool:
        return self._appends_under is None or key.startswith(self._appends_under)

    def stat(self, key: str) -> ObjectInfo | None:
        if not self._may_be_segmented(key):
            return self._head(key)
        known = self._known_segmented(key)
        if not known:
            info = self._head(key)
            if info is not None:
                return info
        chain = self._refresh_segments(key)
        if chain is not None:
            return ObjectInfo(chain[-1][0], chain[-1][1])
        return self._head(key) if known else None  # gc may have put it back whole

    def read_range(self, key: str, offset: int, length: int) -> bytes | None:
        if offset < 0 or length < 0:
            raise ValueError(f"negative range {offset}+{length} of {key}")
        if self._known_segmented(key):
            data = self._segmented_range(key, offset, length)
            if data is not None:
                return data
        data = self._get_range(key, offset, offset + length)
        if data is None and not self._known_segmented(key) and self._may_be_segmented(key):
            return self._segmented_range(key, offset, length)
        return data

    def get(self, key: str) -> bytes | None:
        if not self._known_segmented(key):
            with _errors("reading", self._where(key)):
                try:
                    return bytes(self._obs.get(self.store, key).bytes())
                except FileNotFoundError as exc:
                    _unless_bucket_missing(exc, self.location)
                    if not self._may_be_segmented(key):
                        return None
        info = self.stat(key)
        return None if info is None else self.read_range(key, 0, info.size)

    def read_into(self, key: str, out: memoryview) -> int | None:
        """Fill ``out`` from the start of the object.

        With a cache directory, an object of at least :data:`CACHE_MIN_BYTES` is looked up (one
        ``HEAD``) by its key, size and ETag, which changes whenever the object is replaced: a copy
        kept under them is read from the local disk instead of the service; otherwise the object
        is fetched and a copy kept (published by rename, so a copy is whole or absent).  The
        directory grows until it is emptied by hand."""
        out = out.cast("B") if out.format != "B" else out
        if (
            self._cache is not None
            and out.nbytes >= CACHE_MIN_BYTES
            and not self._known_segmented(key)
        ):
            return self._read_cached(key, out)
        return self._read_into(key, out)

    def _read_cached(self, key: str, out: memoryview) -> int | None:
        with _errors("inspecting", self._where(key)):
            try:
                meta = self._obs.head(self.store, key)
            except FileNotFoundError as exc:
                _unless_bucket_missing(exc, self.location)
                return self._read_into(key, out)  # perhaps segmented
        size = int(meta["size"])
        assert self._cache is not None
        name = hashlib.sha256(
            f"{self.location}\0{key}\0{meta.get('e_tag')}\0{size}".encode()
        ).hexdigest()
        path = os.path.join(self._cache, name[:2], name)
        wanted = min(size, out.nbytes)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                if os.fstat(fd).st_size == size:
                    got = 0
                    while got < wanted:
                        n = os.readv(fd, [out[got:wanted]])
                        if n <= 0:
                            break
                        got += n
                    if got == wanted:
                        return got
            finally:
                os.close(fd)
        fetched = self._read_into(key, out)
        if fetched is not None and fetched == size:  # the whole object: keep a copy
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
                with open(tmp, "wb") as f:
                    f.write(out[:fetched])
                os.replace(tmp, path)
            except OSError:
                pass  # a cache that cannot be written only costs the next read a fetch
        return fetched

    def _read_into(self, key: str, out: memoryview) -> int | None:
        if self._known_segmented(key):
            data = self.read_range(key, 0, out.nbytes)
            if data is None:
                return None
            out[: len(data)] = data
            return len(data)
        if out.nbytes <= READ_PART_SIZE:
            buffer = self._get_buffer(key, 0, out.nbytes)
            if buffer is None:
                if not self._may_be_segmented(key) or self._refresh_segments(key) is None:
                    return None
                return self._read_into(key, out)
            out[: buffer.nbytes] = buffer
            return buffer.nbytes
        # A large object: its first part tells the size, the rest comes in parallel.
        with _errors("reading", self._where(key)):
            try:
                first = self._obs.get(self.store, key, options={"range": (0, READ_PART_SIZE)})
                head = first.bytes()
                size = min(int(first.meta["size"]), out.nbytes)
            except FileNotFoundError as exc:
                _unless_bucket_missing(exc, self.location)
                first = None
            except self._obs.exceptions.GenericError as exc:
                if "416" not in str(exc):
                    raise
                return 0  # an empty object
        if first is None:  # a segmented object, or none
            if not self._may_be_segmented(key):
                return None
            data = self._segmented_range(key, 0, out.nbytes)
            if data is None:
                return None
            out[: len(data)] = data
            return len(data)
        n = min(len(head), size)
        out[:n] = memoryview(head)[:n]
        ranges = [(s, min(s + READ_PART_SIZE, size)) for s in range(n, size, READ_PART_SIZE)]

        def fetch(r: tuple[int, int]) -> int:
            piece = self._get_buffer(key, *r)
            if piece is None:
                return 0
            out[r[0] : r[0] + piece.nbytes] = piece
            return piece.nbytes

        got = sum(self._pool.map(fetch, ranges))
        return n + got

    def put_if_absent(self, key: str, data: Data, *, overwrite: bool = False) -> bool:
        return self._put(key, data, create=not overwrite)

    def delete(self, key: str) -> bool:
        existed = False
        if self._head(key) is not None:
            with _errors("deleting", self._where(key)):
                self._obs.delete(self.store, key)
            existed = True
        if not self._may_be_segmented(key):
            return existed
        listed = self._list_segments(key)
        with self._lock:
            self._segments.pop(key, None)
        if listed:
            # The last segment first: a reader that finds the last segment it knew still there
            # may trust every earlier one (see ``_refresh_segments``); then the first, which
            # ends the object; then the rest.
            names = [segment_key(key, end) for end, _, _ in sorted(listed)]
            with _errors("deleting", self._where(key)):
                self._obs.delete(self.store, names[-1])
                if len(names) > 1:
                    self._obs.delete(self.store, names[0])
                if len(names) > 2:
                    self._obs.delete(self.store, names[1:-1])
            existed = True
        return existed

    def list(self, prefix: str) -> Iterator[str]:
        prefix = prefix.strip("/")
        plain: list[str] = []
        segmented: dict[str, list[_Listed]] = {}
        with _errors("listing", self._where(prefix)):
            for batch in self._obs.list(self.store, prefix=prefix or None, chunk_size=1000):
                for meta in batch:
                    path = meta["path"]
                    split = _split_segment(path)
                    if split is None:
                        plain.append(path)
                    else:
                        segmented.setdefault(split[0], []).append(
                            (split[1], int(meta["size"]), _timestamp(meta))
                        )
        keys = dict.fromkeys(plain)
        with self._lock:
            for key, listed in segmented.items():
                chain = _chain(listed)
                if chain is not None:
                    self._segments[key] = chain
                    keys[key] = None
        return iter(keys)

    def _consolidate(self, key: str, data: bytearray, ends: Sequence[int]) -> None:
        """Replace the segments of a closed object by one plain object of the same bytes: publish
        it, then delete the first segment (which ends the chain, so readers turn to the plain
        object), then the others.  A reader in the middle of reading segments finds one gone,
        looks again and reads the plain object."""
        if not self._put(key, memoryview(data), create=True):
            return  # something is there already: leave both alone
        names = [segment_key(key, end) for end in ends]
        with _errors("deleting", self._where(key)):
            self._obs.delete(self.store, names[0])
            self._obs.delete(self.store, names[1:])
        with self._lock:
            self._segments.pop(key, None)

    # -- Appending ------------------------------------------------------------------------------

    def open_append(self, key: str) -> Appender:
        if not self._may_be_segmented(key):
            raise ValueError(
                f"{key}: appended objects of this backend live under {self._appends_under}"
            )
        if self._head(key) is not None:
            raise FileExistsError(f"{self._where(key)} exists; a log or pack is created once")
        if not self._put(segment_key(key, 0), b"", create=True):
            raise FileExistsError(f"{self._where(key)} exists; a log or pack is created once")
        with self._lock:
            self._segments[key] = [(0, time.time())]
        return _SegmentAppender(self, key)


class _SegmentAppender(Appender):
    """Appends to one logical object as segments; each ``append`` is one conditional put.

    It keeps a copy of what it appended (up to :data:`CONSOLIDATE_LIMIT`), so that ``close`` can
    replace the segments by one plain object: a closed log or pack then costs one request to
    list and one to read, not one per append."""

    def __init__(self, backend: ObjectStoreBackend, key: str) -> None:
        self._backend = backend
        self._key = key
        self._end = 0
        self._ends = [0]
        self._kept: bytearray | None = bytearray()
        self._closed = False
        self._uncertain = False
        self._lock = threading.Lock()

    def append(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                raise StoreError(f"{self._backend._where(self._key)} is closed")
            if not data:
                return
            backend = self._backend
            if self._uncertain:
                # The last append failed: it may have landed anyway.  Continue after what is there.
                chain = backend._refresh_segments(self._key)
                if chain is None:
                    raise StoreError(f"{backend._where(self._key)} vanished while it was written")
                self._end = chain[-1][0]
                self._ends = [end for end, _ in chain]
                self._uncertain = False
            end = self._end + len(data)
            name = segment_key(self._key, end)
            try:
                published = backend._put(name, data, create=True)
            except BaseException:
                self._uncertain = True
                self._kept = None  # what the object holds is not known here any more
                raise
            # Not published: a retried put whose first attempt landed, or someone else's segment.
            if not published and backend._get_range(name, 0, len(data) + 1) != bytes(data):
                self._uncertain = True
                self._kept = None
                raise StoreError(
                    f"{backend._where(name)} was written by someone else: two writers append to "
                    f"{self._key}; each writer must have an id of its own"
                )
            self._end = end
            self._ends.append(end)
            if self._kept is not None:
                self._kept += data
                if len(self._kept) > CONSOLIDATE_LIMIT:
                    self._kept = None
            with backend._lock:
                chain = backend._segments.get(self._key)
                if chain is not None and chain[-1][0] == end - len(data):
                    chain.append((end, time.time()))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            kept, self._kept = self._kept, None
            if kept is None or len(self._ends) < 3 or self._uncertain:
                return  # nothing worth consolidating (or not known exactly)
            try:
                self._backend._consolidate(self._key, kept, self._ends)
            except StoreError:
                pass  # the segments stay, as readable as before


# -- configuration ----------------------------------------------------------------------------------


def _aws_environment(
    options: dict[str, Any], client: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    """Fill in what obstore does not take from the AWS environment by itself: the endpoint in
    ``AWS_ENDPOINT_URL`` (plain HTTP allowed when it says ``http://``), ``AWS_DEFAULT_REGION``,
    and a named profile's credentials (``AWS_PROFILE``, through boto3 when it is installed)."""
    env = os.environ
    endpoint = options.get("endpoint") or options.get("endpoint_url")
    if "endpoint_url" in options:
        options["endpoint"] = options.pop("endpoint_url")
    if endpoint is None:
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint"] = endpoint
    if endpoint and str(endpoint).startswith("http://"):
        client.setdefault("allow_http", True)
    if "region" not in options and not env.get("AWS_REGION") and env.get("AWS_DEFAULT_REGION"):
        options["region"] = env["AWS_DEFAULT_REGION"]
    profile = options.pop("profile", None) or env.get("AWS_PROFILE")
    explicit = (
        "access_key_id" in options or env.get("AWS_ACCESS_KEY_ID") or options.get("skip_signature")
    )
    if profile and not explicit:
        try:
            import boto3
            from obstore.auth.boto3 import Boto3CredentialProvider
        except ImportError:
            return  # obstore's own chain (instance metadata, web identity...) applies
        session = boto3.Session(profile_name=profile)
        kwargs["credential_provider"] = Boto3CredentialProvider(session)
        if "region" not in options and session.region_name:
            options["region"] = session.region_name


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


# -- errors -----------------------------------------------------------------------------------------


def _unless_bucket_missing(exc: FileNotFoundError, location: str) -> None:
    """A 404 is an absent object, unless the bucket itself is missing."""
    if "NoSuchBucket" in str(exc):
        raise BucketNotFoundError(
            f"the bucket of {location} does not exist; create it, or check the URL and the "
            "endpoint (AWS_ENDPOINT_URL)"
        ) from exc


#: An answer from the service saying it is busy or failing.  Status codes as whole words only: a
#: timing such as "in 107.148503ms" in the client's message is no 503.
_SERVICE_ERROR = re.compile(r"SlowDown|\b50[0234]\b")

_CONNECTION_WORDS = (
    "error sending request",
    "connection",
    "timed out",
    "timeout",
    "dns",
    "reset",
    "closed",
    "eof",
)


def _connection_failed(exc: BaseException | None) -> bool:
    """Whether obstore's error is a failed connection (rather than an answer from the service)."""
    text = str(exc).lower()
    return (
        exc is not None
        and "server returned" not in text
        and any(word in text for word in _CONNECTION_WORDS)
    )


@contextmanager
def _errors(action: str, where: str) -> Iterator[None]:
    """Turn what obstore raises (after its retries) into the matching ``StoreError``."""
    from obstore.exceptions import AlreadyExistsError

    try:
        yield
    except (StoreError, FileNotFoundError, ValueError, AlreadyExistsError):
        raise  # answers the caller handles
    except Exception as exc:
        raise _classify(exc, action, where) from exc


def _classify(exc: Exception, action: str, where: str) -> StoreError:
    import obstore.exceptions as oe

    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    if "NoSuchBucket" in text:
        return BucketNotFoundError(
            f"{action} {where} failed: the bucket does not exist; create it, or check the URL and "
            "the endpoint (AWS_ENDPOINT_URL)"
        )
    if isinstance(exc, (oe.PermissionDeniedError, oe.UnauthenticatedError)) or any(
        code in text
        for code in (
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "403 Forbidden",
            "ExpiredToken",
        )
    ):
        return AccessDeniedError(
            f"{action} {where} was refused: the credentials are wrong or lack permission "
            f"({first[:300]}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
            "storage_options"
        )
    if _SERVICE_ERROR.search(text):
        return StoreUnavailableError(
            f"{action} {where} failed: the service kept answering 'busy' or 'error' (throttling?) "
            f"after retries with backoff ({first[:300]}); nothing half-written is visible; try again later"
        )
    if any(word in text.lower() for word in _CONNECTION_WORDS):
        return StoreUnavailableError(
            f"{action} {where} failed: the endpoint could not be reached or dropped the connection "
            f"after retries with backoff ({first[:300]}); check the endpoint and network, then try "
            "again (nothing half-written is visible)"
        )
    return ObjectStoreError(f"{action} {where} failed: {first[:300]}")
