"""Recording model runs: the tensors of eager code (:func:`record`) and of compiled graphs
(:func:`recording_backend`), in an order that two runs can be lined up by, and scripts that
replay one recorded graph (:func:`make_repro`)."""

from __future__ import annotations

from .compiled import RecordingBackend, recording_backend
from .log import Entry, read_order
from .recorder import Recorder, record
from .repro import make_repro

__all__ = [
    "Entry",
    "Recorder",
    "RecordingBackend",
    "make_repro",
    "read_order",
    "record",
    "recording_backend",
]
