"""Workloads on many small tensors, and the memory a large write costs: small, many, rss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

import tensorcas

from .contenders import (
    SAFETENSORS,
    TENSORCAS,
    TENSORCAS_BG,
    TORCH_CS_DEFAULT,
    TORCH_CS_SHA1,
    TORCH_SAVE,
    raw_read_files,
    raw_write_files,
    st_load_file,
    torch_cs_warmup,
)
from .goals import MANY_LIST_SECONDS, MANY_WRITE_RATE, RSS_FRACTION, apply_goals
from .harness import (
    HERE,
    Case,
    Config,
    GiB,
    MiB,
    Results,
    Row,
    byte_view,
    fresh,
    make_small,
    rm,
    run_cases,
    settle,
)
from .registry import workload

try:
    from safetensors import safe_open
except ImportError:  # pragma: no cover - safetensors is in the bench extra
    safe_open = None

CHANGED = (5, 16, 27)  # indices of the tensors changed in the "partial" workload

@workload("small")
def wl_small(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "small"
    d = os.path.join(cfg.out, wl)
    tensors = make_small(cfg.n_small, seed=7)
    views = {n: byte_view(t) for n, t in tensors.items()}
    res.nbytes[wl] = sum(v.nbytes for v in views.values())
    sub = dict(list(tensors.items())[: max(100, len(tensors) // 10)])
    res.note(wl, f"torch-cs-default and tensorcas-sub use the first {len(sub)} tensors only (the compiled hash is slow)")
    warm = torch_cs_warmup([64, 100, 300, 700, 1024])
    if warm > 0.5:
        res.note(wl, f"torch-cs-default warm-up (torch.compile, excluded): {warm:.1f} s")

    def target(kind: str) -> str:
        return os.path.join(d, kind)

    def tc(rep: int, background: bool, which: dict[str, torch.Tensor] = tensors) -> dict[str, float]:
        p = fresh(target("tc-bg" if background else "tc"))
        t0 = time.perf_counter()
        (TENSORCAS_BG if background else TENSORCAS).write(p, which)
        t1 = time.perf_counter()
        (TENSORCAS_BG if background else TENSORCAS).read(p, list(which))
        t2 = time.perf_counter()
        return {"write": t1 - t0, "read": t2 - t1}

    def cs(rep: int, stable: bool, which: dict[str, torch.Tensor] = tensors) -> dict[str, float]:
        p = fresh(target(f"cs-{stable}"))
        t0 = time.perf_counter()
        (TORCH_CS_SHA1 if stable else TORCH_CS_DEFAULT).write(p, which)
        t1 = time.perf_counter()
        (TORCH_CS_SHA1 if stable else TORCH_CS_DEFAULT).read(p, list(which))
        t2 = time.perf_counter()
        return {"write": t1 - t0, "read": t2 - t1}

    def raw(rep: int) -> dict[str, float]:
        p = fresh(target("raw"))
        bufs = {n: bytearray(v.nbytes) for n, v in views.items()}
        t0 = time.perf_counter()
        raw_write_files(p, views)
        t1 = time.perf_counter()
        raw_read_files(p, bufs)
        t2 = time.perf_counter()
        return {"write": t1 - t0, "read": t2 - t1}

    def one_file(rep: int, save: Callable[[str], None], load: Callable[[str], object]) -> dict[str, float]:
        p = target("file")
        rm(p)
        os.makedirs(d, exist_ok=True)
        t0 = time.perf_counter()
        save(p)
        t1 = time.perf_counter()
        load(p)
        t2 = time.perf_counter()
        return {"write": t1 - t0, "read": t2 - t1}

    cases = [
        Case("tensorcas", lambda rep: tc(rep, False), writes=True),
        Case("raw-files", raw, writes=True),
        Case("torch-cs-sha1", lambda rep: cs(rep, True), writes=True, reps=cfg.slow_reps),
        Case("tensorcas-sub", lambda rep: tc(rep, False, sub), writes=True),
        Case("torch-cs-default-sub", lambda rep: cs(rep, False, sub), writes=True, reps=cfg.slow_reps),
        Case("torch.save (one file)", lambda rep: one_file(rep, lambda p: TORCH_SAVE.write(p, tensors), lambda p: TORCH_SAVE.read(p, [])), writes=True),
    ]
    cases.insert(1, Case("tensorcas-bg", lambda rep: tc(rep, True), writes=True))
    if SAFETENSORS is not None:
        cases.append(Case("safetensors (one file)", lambda rep: one_file(rep, lambda p: SAFETENSORS.write(p, tensors), st_load_file), writes=True))
    for c in cases:
        c.teardown = lambda rep: rm(d)
    run_cases(cfg, res, wl, cases)
    apply_goals(res, wl, n=cfg.n_small, sub=len(sub))
    rm(d)


@workload("many")
def wl_many(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "many"
    d = os.path.join(cfg.out, wl)
    tensors = make_small(cfg.n_many, seed=11)
    names = list(tensors)
    res.nbytes[wl] = sum(t.nbytes for t in tensors.values())
    n = len(names)

    def tc(rep: int, background: bool) -> dict[str, float]:
        p = fresh(os.path.join(d, "tc"))
        t0 = time.perf_counter()
        (TENSORCAS_BG if background else TENSORCAS).write(p, tensors)
        t1 = time.perf_counter()
        settle(cfg)
        t2 = time.perf_counter()
        r = tensorcas.ContentStoreReader(p)
        listed = r.list_tensors()
        t3 = time.perf_counter()
        if len(listed) != n:
            raise SystemExit(f"listed {len(listed)} names, wrote {n}")
        if background:  # reading back is measured once, on the default writer's store
            return {"write": t1 - t0, "open+list": t3 - t2}
        out = [r.read_tensor(x) for x in names]
        t4 = time.perf_counter()
        del out
        return {"write": t1 - t0, "open+list": t3 - t2, "read": t4 - t3}

    # The background writer is measured on small tensors in "small"; here it would double the time.
    cases = [Case("tensorcas", lambda rep: tc(rep, False), teardown=lambda rep: rm(d), writes=True)]
    run_cases(cfg, res, wl, cases, reps=min(cfg.reps, 3))
    res.note(wl, "phases are timed separately; an os.sync() between write and listing is excluded from both")
    for who in ("tensorcas", "tensorcas-bg"):
        if not res.has(wl, f"{who}:write"):
            continue
        w = res.med(wl, f"{who}:write")
        rate = n / w
        res.rows.append(Row(wl, f"{n:,} small tensors, write", who, w, None, None, rate, f"{rate:,.0f} tensors/s", f">= {MANY_WRITE_RATE:,}/s", rate >= MANY_WRITE_RATE))
        lst = res.med(wl, f"{who}:open+list")
        res.rows.append(Row(wl, f"list {n:,} names, fresh reader", who, lst, None, None, lst, f"{lst:.3f} s", f"< {MANY_LIST_SECONDS:g} s", lst < MANY_LIST_SECONDS))
        if not res.has(wl, f"{who}:read"):
            continue
        rd = res.med(wl, f"{who}:read")
        res.rows.append(Row(wl, f"{n:,} small tensors, read back", who, rd, None, None, n / rd, f"{n / rd:,.0f} tensors/s", "(info)", None))
    rm(d)


@workload("rss")
def wl_rss(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "rss"
    d = os.path.join(cfg.out, wl)
    contenders = ["tensorcas", "tensorcas-bg", "raw-write"] + ([] if cfg.quick else ["torch.save", "torch-cs-sha1"])
    if SAFETENSORS is not None and not cfg.quick:
        contenders.append("safetensors")
    res.nbytes[wl] = cfg.rss_bytes
    probe = os.path.join(HERE, "rss_probe.py")
    found: dict[str, dict[str, Any]] = {}
    for name in contenders:
        fresh(d)
        os.makedirs(d, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, probe, name, str(cfg.rss_bytes), d], capture_output=True, text=True, check=False
        )
        rm(d)
        settle(cfg)
        if proc.returncode != 0:
            res.note(wl, f"{name}: probe failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        found[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        res.samples.setdefault(wl, {})[name] = [found[name]["peak_increase"]]
        res.samples[wl][f"{name}:seconds"] = [found[name]["seconds"]]
        print(f"  [rss] {name}: +{found[name]['peak_increase'] / MiB:.1f} MiB", file=sys.stderr, flush=True)
    res.extra["rss"] = found
    size = cfg.rss_bytes
    for name, f in found.items():
        frac = f["peak_increase"] / size
        goal = name.startswith("tensorcas")
        res.rows.append(
            Row(
                wl,
                f"peak RSS increase writing 1 x {size / GiB:g} GiB",
                name,
                f["peak_increase"],
                None,
                None,
                frac,
                f"{100 * frac:.1f}% of size ({f['peak_increase'] / MiB:.0f} MiB)",
                f"< {100 * RSS_FRACTION:g}%" if goal else "(info)",
                (frac < RSS_FRACTION) if goal else None,
                unit="B",
            )
        )
