"""Names: of checkpoints, of their manifests, and of the chunks each save writes.

The manifest of checkpoint ``step-100`` is the tensor ``checkpoints/step-100``; the chunks of one
save of it are ``checkpoints/step-100/<save id>/<fqn>@<offsets>``.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid

from ..errors import InvalidNameError

#: Names of manifests are ``checkpoints/<checkpoint>``; their chunks live below that name.
PREFIX = "checkpoints"

_CHECKPOINT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
SAVE_ID_RE = re.compile(r"[0-9a-f]{1,32}-[0-9a-f]{8}\Z")


def validate_checkpoint_name(name: object) -> str:
    """Return ``name`` if it can name a checkpoint: 1-128 characters of ``[A-Za-z0-9._-]``,
    starting with a letter or digit (``step-100``, ``epoch3.step500``)."""
    if not isinstance(name, str) or not _CHECKPOINT_NAME_RE.match(name):
        raise InvalidNameError(
            f"{name!r} is not a checkpoint name; use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, such as 'step-100'"
        )
    return name


def is_checkpoint_name(name: str) -> bool:
    return _CHECKPOINT_NAME_RE.match(name) is not None


def manifest_name(checkpoint: str) -> str:
    """The tensor name whose blob is the manifest of ``checkpoint``."""
    return f"{PREFIX}/{validate_checkpoint_name(checkpoint)}"


def chunks_prefix(checkpoint: str) -> str:
    """The prefix of every chunk name any save of ``checkpoint`` wrote (finished or not)."""
    return f"{manifest_name(checkpoint)}/"


def new_save_id() -> str:
    """A fresh id for one save: its time in hex (so ids sort by time) and 8 random hex digits."""
    return f"{time.time_ns():x}-{uuid.uuid4().hex[:8]}"


def chunk_name(checkpoint: str, save_id: str, fqn: str, offsets: tuple[int, ...]) -> str:
    """The tensor name of one chunk: readable (``.../model.layers.0.weight@64,0``) and unique
    per (fqn, offsets).  Characters a name may not hold, and ``%``, ``/`` and ``@``, are
    percent-encoded; a very long fqn is replaced by a hash of it."""
    quoted = fqn if _PLAIN_FQN.match(fqn) else "".join(_quote_char(c) for c in fqn)
    if len(quoted.encode()) > 1024:
        quoted = (
            "~" + hashlib.blake2b(fqn.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        )
    return f"{chunks_prefix(checkpoint)}{save_id}/{quoted}@{','.join(map(str, offsets))}"


#: An fqn of printable ASCII without ``%``, ``/``, ``@`` or a backslash needs no quoting (the
#: usual case).
_PLAIN_FQN = re.compile(r"[\x20-\x24\x26-\x2e\x30-\x3f\x41-\x5b\x5d-\x7e]*\Z")


def _quote_char(c: str) -> str:
    if c in "%/@\\" or ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF:
        return "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
    return c
