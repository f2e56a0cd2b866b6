"""Helpers shared by the reliability tests: inspecting a store's files and planting log lines.

They read the layout directly, on purpose: these tests check what is on disk, not only what the
library says about it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import blake3
import torch

import tensorcas

_HEX62 = re.compile(r"[0-9a-f]{62}\Z")
_ID = re.compile(r"[0-9a-z][0-9a-z._-]{0,127}\Z")


def frame(body: bytes) -> bytes:
    """A log line carrying ``body`` with a valid checksum, so that a planted record reaches the
    validation behind the checksum instead of being stopped by it."""
    return blake3.blake3(body).hexdigest()[:16].encode("ascii") + b" " + body + b"\n"


def frame_obj(obj: Any) -> bytes:
    """``frame`` of the compact JSON a writer would produce for ``obj``."""
    return frame(json.dumps(obj, separators=(",", ":")).encode("ascii"))


def split_line(line: bytes) -> dict[str, Any]:
    """The JSON object of one well-formed log line (without its newline)."""
    return json.loads(line[17:])


def log_files(root: str) -> list[str]:
    """Paths of every log of the store at ``root``."""
    logs = os.path.join(root, "logs")
    if not os.path.isdir(logs):
        return []
    return sorted(os.path.join(logs, n) for n in os.listdir(logs) if n.endswith(".log"))


def blob_files(root: str) -> list[str]:
    """Paths of every loose blob file of the store at ``root``."""
    out = []
    blobs = os.path.join(root, "blobs")
    for dirpath, _, files in os.walk(blobs):
        out.extend(os.path.join(dirpath, f) for f in files if not f.startswith("."))
    return sorted(out)


def unexpected_files(root: str) -> list[str]:
    """Files under ``root`` that a sound store does not hold: anything but the marker, blobs named
    by their digest, logs, packs and temporary files of interrupted writes."""
    bad = []
    for dirpath, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        parts = [] if rel_dir == "." else rel_dir.split(os.sep)
        for name in files:
            if name.startswith(".tmp-"):
                continue
            rel = "/".join([*parts, name])
            if rel == "tensorcas.json":
                continue
            if (
                len(parts) == 2
                and parts[0] == "blobs"
                and len(parts[1]) == 2
                and _HEX62.match(name)
            ):
                continue
            if parts == ["logs"] and name.endswith(".log") and _ID.match(name[:-4]):
                continue
            if parts == ["packs"] and name.endswith(".pack") and _ID.match(name[:-5]):
                continue
            bad.append(rel)
        for name in dirs:
            rel = "/".join([*parts, name])
            if not (rel in ("blobs", "logs", "packs") or (parts == ["blobs"] and len(name) == 2)):
                bad.append(rel + "/")
    return bad


def assert_verify_ok(loc: str) -> tensorcas.VerifyReport:
    """``verify`` finds no errors (warnings about torn log tails are allowed)."""
    report = tensorcas.verify(loc)
    assert report.ok, [f.message for f in report.errors]
    assert all(f.kind == "torn-tail" for f in report.findings), report.findings
    return report


def bits(tensor: torch.Tensor) -> bytes:
    """The exact bytes of a tensor's elements, so equality is bit-exact (NaNs, -0.0 included)."""
    t = torch.empty(tensor.shape, dtype=tensor.dtype).copy_(tensor.detach()).reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
