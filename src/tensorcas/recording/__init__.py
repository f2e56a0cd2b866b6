"""Recording model runs: the tensors of eager code (:func:`record`) and of compiled graphs
(:func:`recording_backend`), in an order that two runs can be lined up by."""

from __future__ import annotations

from .log import Entry, read_order
from .recorder import Recorder, record

__all__ = ["Entry", "Recorder", "read_order", "record"]
