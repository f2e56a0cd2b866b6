"""``verify``: re-hash every blob, re-validate every record, and report each problem.

Read-only: it never deletes or repairs.  Each finding names the blob and every tensor that uses it,
so a damaged dump tells its owner exactly which tensors are lost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import format as fmt
from ..errors import Finding, StoreError
from ..store import Location, Store


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
    report.findings.extend(store.problems())  # damaged log lines and torn tails

    blobs = store.blobs
    reachable = blobs.reachable_blobs()
    stored = reachable.digests(whole=False)
    for key, exc in reachable.unreadable.items():
        digest = fmt.key_to_digest(key)
        names = tuple(r.name for r in users.get(digest, ())) if digest is not None else ()
        report.findings.append(Finding("unreadable", f"{key}: {exc}", digest, names))
    for digest in store.roots():
        if digest not in stored and digest not in users:
            report.findings.append(
                Finding("missing-blob", f"blob {digest} is missing; it is a storage root (write_storage)", digest)
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
            found = blobs.locate(digest)
        except StoreError as exc:
            report.findings.append(Finding("unreadable", f"blob {digest}: {exc}", digest, names))
            stored.discard(digest)
            continue
        if found is None:
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
        actual = found[1].size
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
        # Every copy: its own object and each place in a pack.  Readers may use any of them, so
        # each must be sound.
        for copy in reachable.copies(digest):
            where = copy.describe()
            try:
                actual_digest, nbytes = blobs.inventory.hash_copy(copy)
            except StoreError as exc:
                report.findings.append(Finding("unreadable", f"blob {digest} ({where}): {exc}", digest, names))
                continue
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


def _names(names: tuple[str, ...], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
