"""Peak-RSS probe: run one writer on one large tensor in a fresh process and report the increase.

Run by ``bench.py`` (workload ``rss``) as ``python benchmarks/rss_probe.py CONTENDER NBYTES DIR``;
prints one JSON object.  The tensor is allocated and fully touched before the baseline is taken,
so the increase is what the writer itself holds at its peak (extra copies, buffers), not the
tensor.  Page cache is not part of RSS.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import resource
import sys
import time


def _maxrss_bytes() -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; Linux >= 4.0, no privileges."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def main() -> None:
    contender, nbytes, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    import blake3  # noqa: F401  (imports and their allocations belong to the baseline)
    import psutil
    import torch

    import tensorcas

    if contender == "safetensors":
        from safetensors.torch import save_file
    proc = psutil.Process()

    torch.manual_seed(0)
    tensor = torch.empty(nbytes // 4, dtype=torch.float32).uniform_()
    # A tiny write first, so that one-time set-up (thread pools, module state) is in the baseline.
    if contender.startswith("tensorcas"):
        warm = os.path.join(directory, "warm-store")
        with tensorcas.ContentStoreWriter(warm) as w:
            w.write_tensor("warm", torch.ones(4))
    gc.collect()
    # Where the peak mark can be reset, the increase is exact; otherwise ru_maxrss is compared
    # with the current RSS, which also counts any transient of the set-up above the tensor.
    hwm_reset = _reset_peak()
    rss_before = proc.memory_info().rss
    peak_before = _maxrss_bytes()

    path = os.path.join(directory, "out")
    t0 = time.perf_counter()
    if contender == "raw-write":
        view = memoryview(tensor.numpy()).cast("B")
        with open(path, "wb") as f:
            f.write(view)
    elif contender == "tensorcas":
        w = tensorcas.ContentStoreWriter(path)
        w.write_tensor("big", tensor)
        w.close()
    elif contender == "tensorcas-bg":
        w = tensorcas.ContentStoreWriter(path, background=True)
        w.write_tensor("big", tensor)
        w.flush()
        w.close()
    elif contender == "torch.save":
        torch.save({"big": tensor}, path)
    elif contender == "safetensors":
        save_file({"big": tensor}, path)
    elif contender == "torch-cs-sha1":
        from torch.utils._content_store import ContentStoreWriter

        ContentStoreWriter(path, stable_hash=True).write_tensor("big", tensor)
    else:
        raise SystemExit(f"unknown contender {contender!r}")
    seconds = time.perf_counter() - t0

    peak_after = _maxrss_bytes()
    hwm_after = _status_kib("VmHWM") if hwm_reset else None
    rss_after = proc.memory_info().rss
    if hwm_after is not None:
        increase = max(0, hwm_after * 1024 - rss_before)
        method = "VmHWM after clear_refs"
    else:
        increase = max(0, peak_after - rss_before)
        method = "ru_maxrss - rss before"
    print(
        json.dumps(
            {
                "contender": contender,
                "nbytes": nbytes,
                "seconds": seconds,
                "rss_before": rss_before,
                "rss_after": rss_after,
                "peak_before": peak_before,
                "peak_after": peak_after,
                "peak_increase": increase,
                "method": method,
                "has_background": "background"
                in inspect.signature(tensorcas.ContentStoreWriter).parameters,
            }
        )
    )


if __name__ == "__main__":
    main()
