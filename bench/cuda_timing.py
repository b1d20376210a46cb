"""Supernet-vs-static overhead of OFA-MobileNetV3 (w1.0) subnets on any device, timed the way the device allows.

On CUDA each call is timed with CUDA events after warm-up (cuDNN autotuning on); on CPU with the wall clock. The
sides of a ratio run interleaved (A, B, A, B, ...) in the same rounds. Inference is fp32 under ``no_grad``; a train
step is forward + backward under bf16 autocast on CUDA (fp32 on CPU). With the ``ofa`` package importable (the
``bench`` extra), OFA's own elastic net and its ``get_active_subnet()`` are timed in the same rounds.
Used by ``bench/cuda_smoke.py`` (step 5).
"""

from __future__ import annotations

import contextlib
import importlib.util
import statistics
import time
from collections.abc import Callable

import torch

from bench.elastic_overhead import ofa_pair
from search_spaces import MBv3Arch, create_space
from supernets import create_supernet

__all__ = ["overhead_table", "timed_rounds"]


def timed_rounds(fns: list[Callable[[], object]], device: str, *, repeats: int, warmup: int = 3) -> list[float]:
    """Median seconds of each of ``fns``, run interleaved ``repeats`` times after ``warmup`` calls each."""
    cuda = device.startswith("cuda")
    for fn in fns:
        for _ in range(warmup):
            fn()
    if cuda:
        torch.cuda.synchronize()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                t.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def _archs(space, res: int) -> dict[str, MBv3Arch]:
    n = space.n_stages * space.max_depth
    pick = {"min": lambda xs: xs[0], "mid": lambda xs: xs[len(xs) // 2], "max": lambda xs: xs[-1]}
    r = min(space.resolutions, key=lambda v: abs(v - res))  # a valid arch value; the input decides the size
    return {k: MBv3Arch(ks=(f(space.kernels),) * n, e=(f(space.expands),) * n, d=(f(space.depths),) * space.n_stages,
                        r=r) for k, f in pick.items()}


def _peer_available() -> bool:
    if importlib.util.find_spec("ofa") is None:
        return False
    try:
        from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3  # noqa: F401
    except Exception as exc:  # the peer is optional: report why it is left out and time ours alone
        print(f"ofa package present but not importable ({type(exc).__name__}: {exc}); timing ours only")
        return False
    return True


def _infer(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def fn() -> object:
        with torch.no_grad():
            return model(x)
    return fn


def _train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> Callable[[], object]:
    def fn() -> object:
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else contextlib.nullcontext()
        with amp:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss
    return fn


def overhead_table(device: str, *, batch: int = 64, res: int = 224, repeats: int = 30, warmup: int = 5,
                   subnets: tuple[str, ...] = ("min", "mid", "max")) -> list[dict[str, object]]:
    """One row per subnet (min, mid, max): ms and img/s of supernet and static export, their ratios (and OFA's)."""
    torch.backends.cudnn.benchmark = True
    space = create_space("ofa_mbv3")
    torch.manual_seed(0)
    net = create_supernet("ofa_mbv3", space).to(device)
    peer = _peer_available()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, res, res, generator=g).to(device)
    y = torch.randint(0, 1000, (batch,), generator=g).to(device)
    rows = []
    for tag, arch in _archs(space, res).items():
        if tag not in subnets:
            continue
        net.set_arch(arch)
        static = net.export(arch).module.to(device)
        models = [net, static] + ([m.to(device) for m in ofa_pair(arch)] if peer else [])
        row: dict[str, object] = {"subnet": tag, "batch": batch, "res": res}
        for kind in ("infer", "train"):
            for m in models:
                m.train(kind == "train")
            fns = [_infer(m, x) if kind == "infer" else _train(m, x, y, device) for m in models]
            t = timed_rounds(fns, device, repeats=repeats, warmup=warmup)
            row[f"{kind}_ms"] = round(t[0] * 1e3, 3)
            row[f"{kind}_static_ms"] = round(t[1] * 1e3, 3)
            row[f"{kind}_img_s"] = round(batch / t[0], 1)
            row[f"{kind}_ratio"] = round(t[0] / t[1], 3)
            if peer:
                row[f"ofa_{kind}_ratio"] = round(t[2] / t[3], 3)
                row[f"ours_vs_ofa_{kind}"] = round(t[0] / t[2], 3)
        rows.append(row)
    return rows
