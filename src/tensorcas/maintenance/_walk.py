"""Walking a tensor's elements in bounded chunks, for the tools that look at values (``show``,
``diff``).  Kept apart from ``_common`` because it needs torch, which listing and verifying do not."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ._common import CHUNK_ELEMENTS


def iter_chunks(tensor: torch.Tensor, max_elements: int = CHUNK_ELEMENTS) -> Iterator[torch.Tensor]:
    """The elements of ``tensor`` in row-major order, as 1-D pieces of at most ``max_elements``
    (unless one innermost row is longer).

    Pieces are cut along leading dimensions, so a non-contiguous view is copied a piece at a time
    instead of whole; two tensors of one shape are cut at the same places, which lets callers
    compare them piece by piece.
    """
    if tensor.dim() == 0:
        yield tensor.reshape(1)
        return
    numel = tensor.numel()
    if numel == 0:
        return
    if numel <= max_elements:
        yield tensor.reshape(-1)
        return
    if tensor.dim() == 1:
        for start in range(0, numel, max_elements):
            yield tensor[start : start + max_elements]
        return
    per_row = numel // tensor.shape[0]
    step = max_elements // per_row
    if step == 0:  # one row is already too large: walk each row on its own
        for row in tensor:
            yield from iter_chunks(row, max_elements)
        return
    for start in range(0, tensor.shape[0], step):
        yield tensor[start : start + step].reshape(-1)


def to_wide(chunk: torch.Tensor) -> torch.Tensor:
    """A chunk as float64 (complex128 for complex dtypes), for exact-enough arithmetic."""
    if chunk.dtype.is_complex:
        return chunk.to(torch.complex128)
    return chunk.to(torch.float64)
