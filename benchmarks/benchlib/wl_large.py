"""Workloads on the shared large tensors: write, rewrite, partial, read, hash, lazy."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

import numpy as np
import torch
from torch.utils import _content_store as torch_cs

import tensorcas

from .contenders import (
    SAFETENSORS,
    TENSORCAS,
    TENSORCAS_BG,
    TORCH_CS_DEFAULT,
    TORCH_CS_SHA1,
    TORCH_SAVE,
    Tensorcas,
    blake3_all,
    raw_read_files,
    raw_write_files,
    st_load_file,
    torch_cs_warmup,
)
from .goals import apply_goals
from .harness import (
    Case,
    Config,
    MiB,
    Results,
    byte_view,
    fresh,
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

@workload("write", large=True)
def wl_write(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "write"
    d = os.path.join(cfg.out, wl)
    views = {n: byte_view(t) for n, t in large.items()}
    res.nbytes[wl] = sum(v.nbytes for v in views.values())
    torch_cs_warmup([64, large[next(iter(large))].numel()])

    def target(kind: str) -> str:
        return os.path.join(d, kind)

    def case(name: str, fn: Callable[[str], None], reps: int | None = None, nbytes: int | None = None) -> Case:
        return Case(
            name,
            lambda rep: fn(fresh(target(name))) or None,
            teardown=lambda rep: rm(target(name)),
            reps=reps,
            writes=True,
            nbytes=nbytes,
        )

    # PyTorch's default (compiled, non-stable) hash runs at tens of MB/s: it and tensorcas are
    # compared on the first 4 tensors only, so that the run stays within minutes.
    sub = dict(list(large.items())[:4])
    sub_bytes = sum(t.nbytes for t in sub.values())
    cases = [
        case("raw-write", lambda p: raw_write_files(p, views)),
        case("tensorcas", lambda p: TENSORCAS.write(p, large)),
        case("torch-cs-sha1", lambda p: TORCH_CS_SHA1.write(p, large)),
        case("torch.save", lambda p: TORCH_SAVE.write(p, large)),
        case("tensorcas-4", lambda p: TENSORCAS.write(p, sub), nbytes=sub_bytes),
        case("torch-cs-default-4", lambda p: TORCH_CS_DEFAULT.write(p, sub), reps=cfg.slow_reps, nbytes=sub_bytes),
    ]
    cases.insert(2, case("tensorcas-bg", lambda p: TENSORCAS_BG.write(p, large)))
    if SAFETENSORS is not None:
        cases.append(case("safetensors", lambda p: SAFETENSORS.write(p, large)))
    run_cases(cfg, res, wl, cases)
    apply_goals(res, wl, n=len(large), mib=cfg.large_bytes // MiB)
    rm(d)


def populate(cfg: Config, d: str, large: dict[str, torch.Tensor], views: dict[str, memoryview]) -> dict[str, str]:
    """One populated store or file per contender, for the rewrite and partial workloads."""
    paths = {
        "raw-write": os.path.join(d, "raw"),
        "tensorcas": os.path.join(d, "tc"),
        "torch-cs-sha1": os.path.join(d, "torch-cs"),
        "torch.save": os.path.join(d, "model.pt"),
    }
    fresh(d)
    raw_write_files(paths["raw-write"], views)
    TENSORCAS.write(paths["tensorcas"], large)
    paths["tensorcas-bg"] = os.path.join(d, "tc-bg")
    TENSORCAS_BG.write(paths["tensorcas-bg"], large)
    TORCH_CS_SHA1.write(paths["torch-cs-sha1"], large)
    TORCH_SAVE.write(paths["torch.save"], large)
    if SAFETENSORS is not None:
        paths["safetensors"] = os.path.join(d, "model.safetensors")
        SAFETENSORS.write(paths["safetensors"], large)
    settle(cfg)
    return paths


@workload("rewrite", large=True)
def wl_rewrite(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "rewrite"
    d = os.path.join(cfg.out, wl)
    views = {n: byte_view(t) for n, t in large.items()}
    res.nbytes[wl] = sum(v.nbytes for v in views.values())
    paths = populate(cfg, d, large, views)
    vlist = list(views.values())

    cases = [
        Case("hash-only (blake3)", lambda rep: blake3_all(vlist)),
        Case("tensorcas", lambda rep: TENSORCAS.write(paths["tensorcas"], large), writes=True),
        Case("torch-cs-sha1", lambda rep: TORCH_CS_SHA1.write(paths["torch-cs-sha1"], large), writes=True),
        Case("torch.save", lambda rep: TORCH_SAVE.write(paths["torch.save"], large), writes=True),
    ]
    if "tensorcas-bg" in paths:
        cases.insert(2, Case("tensorcas-bg", lambda rep: TENSORCAS_BG.write(paths["tensorcas-bg"], large), writes=True))
    if "safetensors" in paths:
        cases.append(Case("safetensors", lambda rep: SAFETENSORS.write(paths["safetensors"], large), writes=True))
    run_cases(cfg, res, wl, cases)
    apply_goals(res, wl)
    rm(d)


@workload("partial", large=True)
def wl_partial(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "partial"
    d = os.path.join(cfg.out, wl)
    views = {n: byte_view(t) for n, t in large.items()}
    paths = populate(cfg, d, large, views)
    names = list(large)
    changed = [names[i] for i in CHANGED if i < len(names)]
    res.nbytes[wl] = sum(large[n].nbytes for n in changed)
    res.note(wl, f"{len(changed)} of {len(names)} tensors changed ({100 * len(changed) / len(names):.1f}% of the bytes)")
    # A different change per repetition, so that every repetition writes new content.
    variants: list[dict[str, torch.Tensor]] = []
    for rep in range(cfg.reps):
        v = dict(large)
        for n in changed:
            v[n] = large[n] + float(rep + 1)
        variants.append(v)
    vviews = [{n: byte_view(t) for n, t in v.items()} for v in variants]

    def limit(rep: int) -> None:
        # The least any deduplicating writer can do: hash everything, write the changed bytes.
        blake3_all(list(vviews[rep].values()))
        raw_write_files(os.path.join(d, f"limit-{rep}"), {n: vviews[rep][n] for n in changed})

    cases = [
        Case("hash-all+write-changed", limit, writes=True),
        Case("tensorcas", lambda rep: TENSORCAS.write(paths["tensorcas"], variants[rep]), writes=True),
        Case("torch-cs-sha1", lambda rep: TORCH_CS_SHA1.write(paths["torch-cs-sha1"], variants[rep]), writes=True),
        Case("torch.save", lambda rep: TORCH_SAVE.write(paths["torch.save"], variants[rep]), writes=True),
    ]
    if "tensorcas-bg" in paths:
        cases.insert(2, Case("tensorcas-bg", lambda rep: TENSORCAS_BG.write(paths["tensorcas-bg"], variants[rep]), writes=True))
    if "safetensors" in paths:
        cases.append(Case("safetensors", lambda rep: SAFETENSORS.write(paths["safetensors"], variants[rep]), writes=True))
    run_cases(cfg, res, wl, cases)
    apply_goals(res, wl, changed=len(changed), total=len(names))
    rm(d)


@workload("read", large=True)
def wl_read(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "read"
    d = os.path.join(cfg.out, wl)
    views = {n: byte_view(t) for n, t in large.items()}
    res.nbytes[wl] = sum(v.nbytes for v in views.values())
    fresh(d)
    raw_dir = os.path.join(d, "raw")
    tc_dir = os.path.join(d, "tc")
    cs_dir = os.path.join(d, "torch-cs")
    pt = os.path.join(d, "model.pt")
    stf = os.path.join(d, "model.safetensors")
    raw_write_files(raw_dir, views)
    TENSORCAS.write(tc_dir, large)
    TORCH_CS_SHA1.write(cs_dir, large)
    TORCH_SAVE.write(pt, large)
    if SAFETENSORS is not None:
        SAFETENSORS.write(stf, large)
    settle(cfg)
    buffers = {n: bytearray(v.nbytes) for n, v in views.items()}  # preallocated and touched
    names = list(large)

    tc_verify = Tensorcas(verify=True)

    dtypes = {n: t.dtype for n, t in large.items()}

    def raw_fromfile() -> None:
        # The plainest eager reader: numpy reads each file into an array of its own (numpy
        # advises huge pages for it) and torch wraps the array without a copy.
        out = [
            torch.from_numpy(np.fromfile(os.path.join(raw_dir, n), dtype=np.uint8)).view(dtypes[n])
            for n in names
        ]
        del out

    def raw_numpy_readinto() -> None:
        # The same, reading into an array numpy allocates first (np.empty, then readinto):
        # one read() per file into huge-page-advised memory, without fromfile's stdio.
        out = []
        for n in names:
            array = np.empty(views[n].nbytes, dtype=np.uint8)
            with open(os.path.join(raw_dir, n), "rb", buffering=0) as f:
                f.readinto(memoryview(array))
            out.append(torch.from_numpy(array).view(dtypes[n]))
        del out

    digests = [tensorcas.ContentStoreReader(tc_dir).read_tensor_metadata(n).blob for n in names]

    def tc_read_storage() -> None:
        reader = tensorcas.ContentStoreReader(tc_dir)
        out = [reader.read_storage(x) for x in digests]
        del out

    def raw_read_fresh() -> None:
        # The same reads into newly allocated memory: what an eager reader that returns new
        # tensors pays at least (first-touch page faults of the destination).
        out = {n: torch.empty(v.nbytes, dtype=torch.uint8) for n, v in views.items()}
        raw_read_files(raw_dir, {n: byte_view(t) for n, t in out.items()})
        del out

    cases = [
        Case("raw-read", lambda rep: raw_read_files(raw_dir, buffers)),
        Case("raw-read-fresh", lambda rep: raw_read_fresh()),
        Case("np.fromfile", lambda rep: raw_fromfile()),
        Case("np.empty+readinto", lambda rep: raw_numpy_readinto()),
        Case("tensorcas", lambda rep: TENSORCAS.read(tc_dir, names) and None),
        Case("tensorcas-read_storage", lambda rep: tc_read_storage()),
        Case("tensorcas-verify", lambda rep: tc_verify.read(tc_dir, names) and None),
        Case("torch-cs", lambda rep: TORCH_CS_SHA1.read(cs_dir, names) and None),
        Case("torch.load", lambda rep: torch.load(pt, weights_only=True) and None),
    ]
    if SAFETENSORS is not None:
        # safetensors' default load_file maps the file (lazy); its "pread" backend reads it.
        if "backend" in inspect.signature(st_load_file).parameters:
            cases.append(Case("safetensors (pread)", lambda rep: st_load_file(stf, backend="pread") and None))
        else:
            cases.append(Case("safetensors (mmap)", lambda rep: st_load_file(stf) and None))
    # One untimed pass so that every file is equally in the page cache.
    for c in cases:
        c.fn(-1)
    run_cases(cfg, res, wl, cases)
    apply_goals(res, wl, n=len(large), mib=cfg.large_bytes // MiB)
    rm(d)


@workload("hash", large=True)
def wl_hash(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "hash"
    storages = [t.untyped_storage() for t in large.values()]
    views = [byte_view(t) for t in large.values()]
    res.nbytes[wl] = sum(v.nbytes for v in views)
    subset = storages[:4]
    sub_bytes = sum(s.nbytes() for s in subset)
    res.note(wl, "torch-cs-default and tensorcas-4 hash the first 4 tensors only (the compiled path is ~30 MB/s)")
    warm = torch_cs_warmup([64, subset[0].nbytes() // 4])
    if warm > 0.5:
        res.note(wl, f"torch-cs-default warm-up (torch.compile, excluded): {warm:.1f} s")

    def tc_hash(sts: list[torch.UntypedStorage]) -> None:
        for s in sts:
            tensorcas.hash_storage(s)

    cases = [
        Case("blake3-lib", lambda rep: blake3_all(views)),
        Case("tensorcas", lambda rep: tc_hash(storages)),
        Case("torch-cs-sha1", lambda rep: [torch_cs.hash_storage(s, stable_hash=True) for s in storages] and None),
        Case("tensorcas-4", lambda rep: tc_hash(subset), nbytes=sub_bytes),
        Case(
            "torch-cs-default-4",
            lambda rep: [torch_cs.hash_storage(s) for s in subset] and None,
            reps=cfg.slow_reps,
            nbytes=sub_bytes,
        ),
    ]
    run_cases(cfg, res, wl, cases)
    apply_goals(res, wl, n=len(storages), mib=cfg.large_bytes // MiB)


@workload("lazy", large=True)
def wl_lazy(cfg: Config, res: Results, large: dict[str, torch.Tensor]) -> None:
    wl = "lazy"
    d = os.path.join(cfg.out, wl)
    fresh(d)
    tensors = dict(large)
    tensors["small"] = torch.rand(256)
    names = list(large)
    tc_dir = os.path.join(d, "tc")
    pt = os.path.join(d, "model.pt")
    stf = os.path.join(d, "model.safetensors")
    TENSORCAS.write(tc_dir, tensors)
    TORCH_SAVE.write(pt, tensors)
    if SAFETENSORS is not None:
        SAFETENSORS.write(stf, tensors)
    settle(cfg)
    res.nbytes[wl] = sum(t.nbytes for t in tensors.values())
    k = min(8, len(names))
    inner = cfg.lazy_inner

    def tc(mmap: bool, which: list[str]) -> None:
        r = tensorcas.ContentStoreReader(tc_dir, mmap=mmap)
        out = [r.read_tensor(x) for x in which]
        del out

    def st_one() -> None:
        with safe_open(stf, framework="pt") as f:
            f.get_tensor(names[0])

    cases = [
        Case("tc-lazy-1-large", lambda rep: tc(True, names[:1]), inner=inner),
        Case("tc-lazy-1-small", lambda rep: tc(True, ["small"]), inner=inner),
        Case(f"tc-lazy-{k}-large", lambda rep: tc(True, names[:k]), inner=inner),
        Case("tc-lazy-all", lambda rep: tc(True, names), inner=inner),
        Case("tc-eager-1-large", lambda rep: tc(False, names[:1]), inner=max(1, inner // 4)),
        Case("torch.load-mmap-1-large", lambda rep: torch.load(pt, mmap=True, weights_only=True)[names[0]] is None, inner=inner),
        Case("torch.load-1-large", lambda rep: torch.load(pt, weights_only=True)[names[0]] is None),
    ]
    if SAFETENSORS is not None:
        cases.append(Case("safetensors-1-large", lambda rep: st_one(), inner=max(1, inner // 4)))
    for c in cases:  # page cache and imports warm for everyone
        c.fn(-1)
    run_cases(cfg, res, wl, cases)
    res.note(wl, "each sample opens a fresh reader; a lazy read does not touch the tensor's bytes")
    apply_goals(res, wl, mib=cfg.large_bytes // MiB, k=k, n=len(names))
    rm(d)
