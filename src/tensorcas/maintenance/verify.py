"""``verify``: re-hash every blob, re-validate every record, and report each problem.

Read-only: it never deletes or repairs.  Each finding names the blob and every tensor that uses it,
so a damaged dump tells its owner exactly which tensors are lost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import blake3

from .. import format as fmt
from ..errors import StoreError
from ..store import Location, Store

#: Chunk size for hashing blobs that cannot be memory-mapped.
_CHUNK = 16 << 20


@dataclass(frozen=True)
class Finding:
    """One problem: ``kind`` is a stable word for scripts, ``message`` says it for people."""

    kind: str  # damaged-blob, missing-blob, wrong-size, damaged-record, unreadable, torn-tail
    message: str
    blob: str | None = None
    names: tuple[str, ...] = ()
    severity: str = "error"


@dataclass
class VerifyReport:
    location: str
    blobs_checked: int = 0
    bytes_checked: int = 0
    records_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def verify(loc: Location | Store, *, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check the whole store at ``loc``; ``progress`` is called with bytes hashed as it goes."""
    # A store of its own that validates every record as it reads the logs, the ones newer
    # records replaced included: damage anywhere is reported, not only in the records in use.
    store = Store.open(loc.backend if isinstance(loc, Store) else loc, read_only=True, strict=True)
    store.refresh()
    report = VerifyReport(location=store.location)
    users: dict[str, list[fmt.TensorRecord]] = defaultdict(list)
    for record in store.records():
        users[record.blob].append(record)
        report.records_checked += 1
    for problem in store.problems():
        kind = "torn-tail" if problem.severity == "warning" else "damaged-record"
        report.findings.append(Finding(kind, f"{problem.where}: {problem.message}", severity=problem.severity))

    stored = set(store.blobs())
    for digest in store.roots():
        if digest not in stored and digest not in users:
            report.findings.append(
                Finding(
                    "missing-blob",
                    f"blob {digest} is missing; it is a storage root (write_storage)",
                    digest,
                )
            )
    for digest, records in users.items():
        names = tuple(r.name for r in records)
        if digest not in stored:
            report.findings.append(
                Finding("missing-blob", f"blob {digest} is missing; lost tensors: {_names(names)}", digest, names)
            )
            continue
        sizes = {r.nbytes for r in records}
        try:
            info = store.blob_info(digest)
        except StoreError as exc:
            report.findings.append(Finding("unreadable", f"blob {digest}: {exc}", digest, names))
            stored.discard(digest)
            continue
        if info is None:
            report.findings.append(
                Finding(
                    "missing-blob",
                    f"blob {digest} is cut short (its pack is truncated); lost tensors: {_names(names)}",
                    digest,
                    names,
                )
            )
            stored.discard(digest)
            continue
        actual = info.size
        for size in sorted(sizes):
            if size != actual:
                bad = tuple(r.name for r in records if r.nbytes == size)
                report.findings.append(
                    Finding(
                        "wrong-size",
                        f"blob {digest} holds {actual} bytes but {size} were stored; damaged tensors: {_names(bad)}",
                        digest,
                        bad,
                    )
                )

    for digest in sorted(stored):
        names = tuple(r.name for r in users.get(digest, ()))
        used = f"; damaged tensors: {_names(names)}" if names else " (no tensor uses it)"
        report.blobs_checked += 1
        # Every copy: the loose file and each pack the logs place the blob in.  Readers may use
        # any of them, so each must be sound.
        for where, result in _hash_copies(store, digest):
            if isinstance(result, StoreError):
                report.findings.append(Finding("unreadable", f"blob {digest} ({where}): {result}", digest, names))
                continue
            actual_digest, nbytes = result
            report.bytes_checked += nbytes
            if progress is not None:
                progress(nbytes)
            if actual_digest != digest:
                report.findings.append(
                    Finding(
                        "damaged-blob",
                        f"blob {digest} is damaged ({where}): its bytes hash to {actual_digest}{used}",
                        digest,
                        names,
                    )
                )
    return report


def _hash_copies(store: Store, digest: str) -> Iterator[tuple[str, tuple[str, int] | StoreError]]:
    """Each stored copy of the blob, with its digest and size or the error reading it."""
    key = fmt.blob_key(digest)
    try:
        info = store.backend.stat(key)  # also refuses symlinks and special files
        if info is not None:
            yield key, _hash_blob(store, digest)
    except StoreError as exc:
        yield key, exc
    for packed in store.packed_places(digest):
        pack = fmt.pack_key(packed.pack)
        where = f"{pack} at {packed.offset}"
        try:
            if store.backend.stat(pack) is None:
                continue  # a pack gc deleted after moving its blobs: the logs still name it
            data = store.backend.read_range(pack, packed.offset, packed.nbytes)
        except StoreError as exc:
            yield where, exc
            continue
        if data is None or len(data) != packed.nbytes:
            got = "missing" if data is None else f"cut short ({len(data)} of {packed.nbytes} bytes)"
            yield where, StoreError(f"the pack is {got}")
        else:
            yield where, (fmt.format_digest(blake3.blake3(data).hexdigest()), packed.nbytes)


def _hash_blob(store: Store, digest: str) -> tuple[str, int]:
    """The digest and size of the loose blob file."""
    key = fmt.blob_key(digest)
    info = store.backend.stat(key)
    if info is None:
        raise StoreError("the file vanished while it was verified")
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    path = store.backend.local_path(key)
    if path is not None and info.size > 0:
        try:
            hasher.update_mmap(path)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
    else:
        offset = 0
        while offset < info.size:
            chunk = store.backend.read_range(key, offset, _CHUNK)
            if not chunk:
                break
            hasher.update(chunk)
            offset += len(chunk)
    return fmt.format_digest(hasher.hexdigest()), info.size


def _names(names: tuple[str, ...], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
