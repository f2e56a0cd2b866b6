"""The object-storage backend: the core, appends as segments, parallel and cached reads.

The core (get, read a range, stat, put-if-absent, delete, list) maps to one request each, or two
where S3 cannot say in one (a delete that reports whether something was there; a stat of a key
that may be a run of segments, and is not plain).  ``get``, ``read_range``, ``stat`` and ``list``
of a segmented key (``segments.py``) behave exactly as an appended object: the size is the last
segment's end, the modification time the last segment's, ``list`` shows the logical key only.
Segment lists are cached per key; a read within the known end costs no listing, a ``stat`` one
listing of the newest segments.  When its writer closes it, a log or pack becomes one plain
object of the same bytes (``_consolidate``).
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...errors import ObjectStoreError
from ..base import Appender, Appending, Backend, Copying, Data, ObjectInfo, chunks_of
from .buffers import owned_view
from .cache import CACHE_MIN_BYTES, copy_path, keep_copy, read_copy
from .config import open_url, put_backoff
from .failures import resend, translated, unless_bucket_missing
from .segments import (
    SEGMENTS,
    Chain,
    Listed,
    SegmentAppender,
    chain_of,
    segment_key,
    split_segment,
    timestamp,
)

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
#: The largest object one server-side copy request copies (S3's limit for ``CopyObject`` and for
#: one ``UploadPartCopy``); larger ones are copied through the client.
COPY_LIMIT = 5 << 30
#: The obstore stores whose copy is done by the time the request answers: S3's ``CopyObject``
#: (and obstore's in-memory store).  Azure's ``Copy Blob`` may still be running when it answers,
#: and GCS's rewrite of a large object takes several calls this client does not make.
_COPYING_STORES = ("S3Store", "MemoryStore")


class ObjectStoreBackend(Backend, Appending, Copying):
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
        self._segments: dict[str, Chain] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=max_concurrency, thread_name_prefix="tensorcas-obj"
        )
        self._max_concurrency = max_concurrency
        self.parallel_reads = max_concurrency
        self._appends_under = appends_under
        self._cache = None if cache_dir is None else os.path.abspath(os.fspath(cache_dir))
        self._put_retries, self._backoff = put_backoff(retry)
        self._copies = type(store).__name__ in _COPYING_STORES
        # Whether the service copies conditionally (S3 does when ``copy_if_not_exists`` is set):
        # unknown until tried.
        self._conditional_copy: bool | None = None
        # A service's answers are collected into memory made for each (see ``buffers.py``),
        # and its puts keep no reference to what they sent; other stores (obstore's in-memory
        # one) may return the stored bytes themselves, or keep a buffer they were given.
        from obstore.store import AzureStore, GCSStore, S3Store

        self._fresh_responses = isinstance(store, (S3Store, GCSStore, AzureStore))

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
        opened = open_url(url, storage_options, retry)
        return cls(
            opened.store,
            opened.location,
            retry=retry,
            appends_under=appends_under,
            cache_dir=opened.cache_dir,
        )

    def _where(self, key: str) -> str:
        return f"{self.location}/{key}"

    # -- plain objects ------------------------------------------------------------------------

    def _head(self, key: str) -> ObjectInfo | None:
        with translated("inspecting", self._where(key)):
            try:
                meta = self._obs.head(self.store, key)
            except FileNotFoundError as exc:
                unless_bucket_missing(exc, self.location)
                return None
        return ObjectInfo(int(meta["size"]), timestamp(meta))

    def _get_range(self, key: str, start: int, end: int) -> bytes | None:
        """Bytes ``start:end`` of a plain object (fewer at its end), ``None`` if absent."""
        buffer = self._get_buffer(key, start, end)
        return None if buffer is None else bytes(buffer)

    def _get_buffer(self, key: str, start: int, end: int) -> memoryview | None:
        """Like :meth:`_get_range`, as a view of the client's own buffer (no copy)."""
        if end <= start:
            return memoryview(b"") if self._head(key) is not None else None
        with translated("reading", self._where(key)):
            try:
                return memoryview(self._obs.get_range(self.store, key, start=start, end=end))
            except FileNotFoundError as exc:
                unless_bucket_missing(exc, self.location)
                return None
            except self._obs.exceptions.GenericError as exc:
                if _past_the_end(exc):  # the range starts at or past the end: the object is there
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
        if isinstance(data, (list, tuple)) and len(data) == 1:
            # One piece, all at hand (not one a generator yields and may reuse): a service's put
            # has sent it by the time it returns, so it goes as it is; other stores (obstore's
            # in-memory one) may keep the very buffer, which its owner may change or free later.
            piece = data[0]
            return self._put(key, piece if self._fresh_responses else bytes(piece), create=create)
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
            with translated("writing", self._where(key)):
                upload(pieces())
        return True

    def _resending(self, key: str, put: Callable[[], object]) -> None:
        resend(put, self._where(key), retries=self._put_retries, backoff=self._backoff)

    # -- segments -------------------------------------------------------------------------------

    def _list_segments(self, key: str, after: int | None = None) -> list[Listed]:
        """The segments of ``key`` as listed (those ending after ``after``, if given)."""
        offset = None if after is None else segment_key(key, after)
        out: list[Listed] = []
        with translated("listing", self._where(key + SEGMENTS)):
            for batch in self._obs.list(
                self.store, prefix=key + SEGMENTS.rstrip("/"), offset=offset, chunk_size=1000
            ):
                for meta in batch:
                    split = split_segment(meta["path"])
                    if split is not None and split[0] == key:
                        out.append((split[1], int(meta["size"]), timestamp(meta)))
        return out

    def _refresh_segments(self, key: str) -> Chain | None:
        """The chain of ``key`` now; one listing of the newest segments when it is cached (if
        the last known segment is still there, every earlier one is: ``delete`` removes the last
        one first), a full listing otherwise."""
        with self._lock:
            cached = self._segments.get(key)
        chain: Chain | None = None
        if cached is not None and len(cached) >= 2:
            newer = self._list_segments(key, after=cached[-2][0])
            if newer and min(newer)[0] == cached[-1][0]:
                known = [
                    (end, end - prev, mtime)
                    for (prev, _), (end, mtime) in itertools.pairwise(cached)
                ]
                chain = chain_of([(0, 0, cached[0][1]), *known[:-1], *newer])
        if chain is None:
            chain = chain_of(self._list_segments(key))
        with self._lock:
            if chain is None:
                self._segments.pop(key, None)
            else:
                self._segments[key] = chain
        return chain

    def _read_segments(self, key: str, chain: Chain, start: int, end: int) -> bytes | None:
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
            with translated("reading", self._where(key)):
                try:
                    return bytes(self._obs.get(self.store, key).bytes())
                except FileNotFoundError as exc:
                    unless_bucket_missing(exc, self.location)
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
        with translated("inspecting", self._where(key)):
            try:
                meta = self._obs.head(self.store, key)
            except FileNotFoundError as exc:
                unless_bucket_missing(exc, self.location)
                return self._read_into(key, out)  # perhaps segmented
        size = int(meta["size"])
        assert self._cache is not None
        path = copy_path(self._cache, self.location, key, meta.get("e_tag"), size)
        got = read_copy(path, size, out)
        if got is not None:
            return got
        fetched = self._read_into(key, out)
        if fetched is not None and fetched == size:  # the whole object: keep a copy
            keep_copy(path, out[:fetched])
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
        with translated("reading", self._where(key)):
            try:
                first = self._obs.get(self.store, key, options={"range": (0, READ_PART_SIZE)})
                head = first.bytes()
                size = min(int(first.meta["size"]), out.nbytes)
            except FileNotFoundError as exc:
                unless_bucket_missing(exc, self.location)
                first = None
            except self._obs.exceptions.GenericError as exc:
                if not _past_the_end(exc):
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
        return n + self._fetch_ranges(key, out, n, size)

    def _fetch_ranges(self, key: str, out: memoryview, start: int, end: int) -> int:
        """Fill ``out[start:end]`` with the same bytes of ``key``, in ranges of
        :data:`READ_PART_SIZE` fetched in parallel, each copied in place by the thread that
        fetched it; the number of bytes the ranges held (fewer if the object is shorter)."""

        def fetch(r: tuple[int, int]) -> int:
            piece = self._get_buffer(key, *r)
            if piece is None:
                return 0
            out[r[0] : r[0] + piece.nbytes] = piece
            return piece.nbytes

        ranges = [(s, min(s + READ_PART_SIZE, end)) for s in range(start, end, READ_PART_SIZE)]
        return sum(self._pool.map(fetch, ranges))

    def read_whole(
        self,
        key: str,
        size: int,
        allocate: Callable[[], memoryview],
        *,
        adopt: Callable[[memoryview], None] | None = None,
        on_piece: Callable[[memoryview], None] | None = None,
    ) -> int | None:
        """One ``GET`` (for an object over :data:`READ_PART_SIZE`, one per part, in parallel),
        and no ``HEAD`` before it: the size the answer reports is compared with ``size`` before
        its body is read or the buffer is asked for.  The body of a single ``GET`` from a service
        is handed to ``adopt`` as it is (see ``buffers.py``); otherwise it is copied into the
        buffer ``allocate`` gives.  Segmented objects, and objects the local cache may hold, are
        read as by any backend.  ``on_piece`` is not called (the parts arrive in any order)."""
        del on_piece
        if self._known_segmented(key) or (self._cache is not None and size >= CACHE_MIN_BYTES):
            return super().read_whole(key, size, allocate)
        ranged = size > READ_PART_SIZE
        options: Any = {"range": (0, READ_PART_SIZE)} if ranged else None
        # The parts after the first are asked for with it, as many as run at once: a size that a
        # record claims costs at most that many requests before the first answer refutes it.
        starts = range(READ_PART_SIZE, size, READ_PART_SIZE)[: self._max_concurrency - 1]
        wave = [(start, min(start + READ_PART_SIZE, size)) for start in starts]
        early = [(r, self._pool.submit(self._get_buffer, key, *r)) for r in wave]
        try:
            with translated("reading", self._where(key)):
                try:
                    result = self._obs.get(self.store, key, options=options)
                    found = int(result.meta["size"])
                    if found != size:
                        return found  # another size: its body is not read
                    body = result.bytes()
                except FileNotFoundError as exc:
                    unless_bucket_missing(exc, self.location)
                    if self._may_be_segmented(key):
                        return super().read_whole(key, size, allocate)
                    return None
                except self._obs.exceptions.GenericError as exc:
                    if not ranged or not _past_the_end(exc):
                        raise
                    return 0  # the range starts past the end: an empty object
            first = memoryview(body).cast("B")
            if first.nbytes > size or (first.nbytes != min(size, READ_PART_SIZE)):
                return first.nbytes  # a body of another length than its answer said
            if adopt is not None and not ranged and self._fresh_responses:
                owned = owned_view(body)
                if owned is not None:
                    adopt(owned)
                    return size
            out = allocate()
            out = out.cast("B") if out.format != "B" else out
            out[: first.nbytes] = first
            done = first.nbytes
            for (start, end), future in early:
                piece = future.result()
                if piece is None or piece.nbytes != end - start:
                    return done  # shorter than its answer said, or gone: it changed
                out[start:end] = piece
                done = end
            return done + self._fetch_ranges(key, out, done, size)
        finally:
            for _, future in early:
                future.cancel()  # those not started yet, on a return before them

    def put_if_absent(self, key: str, data: Data, *, overwrite: bool = False) -> bool:
        return self._put(key, data, create=not overwrite)

    def delete(self, key: str) -> bool:
        existed = False
        if self._head(key) is not None:
            with translated("deleting", self._where(key)):
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
            with translated("deleting", self._where(key)):
                self._obs.delete(self.store, names[-1])
                if len(names) > 1:
                    self._obs.delete(self.store, names[0])
                if len(names) > 2:
                    self._obs.delete(self.store, names[1:-1])
            existed = True
        return existed

    def copy(self, source: str, dest: str, size: int, *, if_absent: bool) -> bool | None:
        """One server-side copy request (S3's ``CopyObject``); ``None`` (copy through the client)
        on a service whose copy may finish after it answers, for an object over
        :data:`COPY_LIMIT`, and for a source that is not one plain object (segments).

        ``if_absent`` is a conditional copy where the service offers one (on S3, with
        ``copy_if_not_exists`` configured: ``AWS_COPY_IF_NOT_EXISTS=multipart`` on AWS); otherwise
        ``dest`` is checked just before an unconditional copy, as for a multipart upload (see the
        package docstring): only gc restoring a blob or pack under its own key copies this way,
        and what a writer may have put there meanwhile holds the same bytes."""
        if not self._copies or size > COPY_LIMIT or self._known_segmented(source):
            return None
        try:
            if if_absent and self._conditional_copy is not False:
                try:
                    self._copy_resending(source, dest, overwrite=False)
                    self._conditional_copy = True
                    return True
                except self._obs.exceptions.AlreadyExistsError:
                    self._conditional_copy = True
                    return False
                except ObjectStoreError as exc:
                    if not isinstance(exc.__cause__, self._obs.exceptions.NotSupportedError):
                        raise
                    self._conditional_copy = False
            if if_absent and self._head(dest) is not None:
                return False
            self._copy_resending(source, dest, overwrite=True)
            return True
        except FileNotFoundError as exc:
            unless_bucket_missing(exc, self.location)
            return None  # segments, or gone: the caller reads what there is

    def _copy_resending(self, source: str, dest: str, *, overwrite: bool) -> None:
        # Safe to send again: an unconditional copy of bytes that do not change, or a
        # conditional one that finds its first landing as an object already there.
        resend(
            lambda: self._obs.copy(self.store, source, dest, overwrite=overwrite),
            f"{self._where(source)} to {dest}",
            action="copying",
            retries=self._put_retries,
            backoff=self._backoff,
        )

    def list(self, prefix: str) -> Iterator[str]:
        return (key for key, _ in self.list_info(prefix))

    def list_info(self, prefix: str) -> Iterator[tuple[str, ObjectInfo | None]]:
        """One listing gives every key's size and mtime: a segmented key's those of its chain
        (as ``stat`` gives them once the listing cached the chain), a plain key's its own."""
        prefix = prefix.strip("/")
        plain: dict[str, ObjectInfo] = {}
        segmented: dict[str, list[Listed]] = {}
        with translated("listing", self._where(prefix)):
            for batch in self._obs.list(self.store, prefix=prefix or None, chunk_size=1000):
                for meta in batch:
                    path = meta["path"]
                    split = split_segment(path)
                    if split is None:
                        plain[path] = ObjectInfo(int(meta["size"]), timestamp(meta))
                    else:
                        segmented.setdefault(split[0], []).append(
                            (split[1], int(meta["size"]), timestamp(meta))
                        )
        keys: dict[str, ObjectInfo | None] = dict(plain)
        with self._lock:
            for key, listed in segmented.items():
                chain = chain_of(listed)
                if chain is not None:
                    self._segments[key] = chain
                    keys[key] = ObjectInfo(chain[-1][0], chain[-1][1])
        return iter(keys.items())

    def _consolidate(self, key: str, data: bytearray, ends: Sequence[int]) -> None:
        """Replace the segments of a closed object by one plain object of the same bytes: publish
        it, then delete the first segment (which ends the chain, so readers turn to the plain
        object), then the others.  A reader in the middle of reading segments finds one gone,
        looks again and reads the plain object."""
        if not self._put(key, memoryview(data), create=True):
            return  # something is there already: leave both alone
        names = [segment_key(key, end) for end in ends]
        with translated("deleting", self._where(key)):
            self._obs.delete(self.store, names[0])
            self._obs.delete(self.store, names[1:])
        with self._lock:
            self._segments.pop(key, None)

    def _appended(self, key: str, start: int, end: int) -> None:
        """An appender of this backend added the segment ``start:end`` of ``key``."""
        with self._lock:
            chain = self._segments.get(key)
            if chain is not None and chain[-1][0] == start:
                chain.append((end, time.time()))

    # -- Appending ------------------------------------------------------------------------------

    def open_append(self, key: str) -> Appender:
        if not self._may_be_segmented(key):
            raise ValueError(
                f"{key}: appended objects of this backend live under {self._appends_under}"
            )
        # The look for a plain object and the first segment's conditional put go at once (one
        # round trip): a first segment put beside a plain object is taken back at once.
        plain = self._pool.submit(self._head, key)
        created = self._put(segment_key(key, 0), b"", create=True)
        exists = plain.result() is not None
        if exists and created:
            with translated("deleting", self._where(key)):
                self._obs.delete(self.store, segment_key(key, 0))
        if exists or not created:
            raise FileExistsError(f"{self._where(key)} exists; a log or pack is created once")
        with self._lock:
            self._segments[key] = [(0, time.time())]
        return SegmentAppender(self, key)


def _past_the_end(exc: Exception) -> bool:
    """Whether obstore refused a range because it starts at or past the object's end: a
    service's ``416``, or the client's own words (obstore's in-memory store; its Azure client,
    which checks the range against the size the service answered)."""
    text = str(exc)
    return "416" in text or "Wanted range starting at" in text
