"""Writing in the background: a snapshot now, hashing and I/O on a worker thread.

A training loop or a debugging hook hands a tensor over and goes on.  Bytes that are new must be
copied first (they may change right after the call returns, as weights do in a training step), so
background writing costs one copy of each pending new tensor, bounded by ``max_pending_bytes``: a
write waits while the copies not yet written would exceed it (the writer hashes large CPU tensors
first and copies nothing when their bytes are stored already).  One worker keeps records in the
order they were submitted.  A failure is kept and raised by the next ``flush()`` or ``close()``
(and by the next write), never dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from ._memory import empty_cpu_storage
from .errors import StoreError


def snapshot(tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Copy the tensor's whole storage now; return a function giving the same view over the copy.

    The whole storage is copied, not just the view, so that views of one storage still share one
    blob.  On CUDA the copy goes to pinned memory asynchronously and the function waits for it.
    """
    storage = tensor.untyped_storage()
    source = torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)
    wait: Callable[[], None] = lambda: None  # noqa: E731
    if storage.device.type == "cuda":
        host = torch.empty(storage.nbytes(), dtype=torch.uint8, pin_memory=True)
        with torch.cuda.device(storage.device):  # the copy runs on the tensor's device's stream
            host.copy_(source, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        wait = event.synchronize
    else:
        # Into huge-page-backed memory: a copy into new memory is bound by its page faults.
        host = torch.empty(0, dtype=torch.uint8).set_(empty_cpu_storage(storage.nbytes()))
        host.copy_(source)
    shape, stride, offset = tuple(tensor.shape), tuple(tensor.stride()), tensor.storage_offset()
    dtype, requires_grad = tensor.dtype, tensor.requires_grad

    def view() -> torch.Tensor:
        wait()
        out = torch.empty(0, dtype=dtype).set_(host.untyped_storage(), offset, shape, stride)
        return out.requires_grad_(requires_grad) if requires_grad else out

    return view


class BackgroundQueue:
    """Runs write jobs in order on one worker thread, with bounded pending bytes.

    Only counts are kept (jobs and bytes not yet done), so submitting stays O(1) however many
    small writes are queued.
    """

    def __init__(self, max_pending_bytes: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tensorcas-writer")
        self.max_pending_bytes = max_pending_bytes
        self._pending = 0  # bytes of copies not yet written
        self._jobs = 0  # jobs submitted and not finished
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._failures = 0
        self._closed = False

    def submit(self, nbytes: int, job: Callable[[], object]) -> None:
        self.reserve(nbytes)
        self.start(nbytes, job)

    def reserve(self, nbytes: int) -> None:
        """Wait until ``nbytes`` more fit under the limit, and count them (and a job) as pending:
        a copy is made only after this, so copies never exceed the limit by more than one that
        alone is larger.  Follow with :meth:`start`, or :meth:`release` if the job is not made."""
        self.raise_error()
        with self._cond:  # writers may be shared by threads
            while not self._closed and self._pending and self._pending + nbytes > self.max_pending_bytes:
                self._cond.wait()
            if self._closed:  # by another thread, after this write began
                raise StoreError("the writer was closed while this tensor was being written; open a new writer")
            self._pending += nbytes
            self._jobs += 1

    def start(self, nbytes: int, job: Callable[[], object]) -> None:
        """Run a job whose bytes were reserved."""
        try:
            self._pool.submit(self._run, nbytes, job)
        except BaseException:
            self._done(nbytes)
            raise

    def release(self, nbytes: int) -> None:
        """Give back a reservation whose job was never started."""
        self._done(nbytes)

    def _run(self, nbytes: int, job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException as exc:
            with self._cond:
                self._failures += 1
                if self._error is None:
                    self._error = exc
        finally:
            self._done(nbytes)

    def _done(self, nbytes: int) -> None:
        with self._cond:
            self._pending -= nbytes
            self._jobs -= 1
            self._cond.notify_all()

    @property
    def idle(self) -> bool:
        """Whether no write is queued or running."""
        return self._jobs == 0

    def flush(self) -> None:
        """Wait for every submitted write; raise the first failure, if any."""
        with self._cond:
            while self._jobs:
                self._cond.wait()
        self.raise_error()

    def raise_error(self) -> None:
        with self._cond:
            error, failures = self._error, self._failures
            self._error, self._failures = None, 0
        if error is None:
            return
        if failures > 1:
            message = f"{failures} background writes failed; the first: {error}"
            raise StoreError(message) from error
        raise error

    def close(self) -> None:
        with self._cond:  # a write submitted from now on fails; those submitted are flushed
            self._closed = True
            self._cond.notify_all()
        try:
            self.flush()
        finally:
            self._pool.shutdown(wait=True)
