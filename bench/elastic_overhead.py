"""Overhead of running a subnet inside the OFA-MBv3 supernet versus as an exported static module.

(a) median train step (forward + backward + SGD, batch 16, resolution 160) supernet / static;
(b) median batch-1 inference at resolution 224, supernet / static;
(c) BN recalibration over 2000 images (batch 200) / a plain eval forward pass over the same images.
Runs are interleaved in one process (A, B, A, B, ...) so machine load affects both sides alike. With ``--peer``
(default when the ``bench`` extra's ``ofa`` is installed) OFA's own elastic MobileNetV3 and its
``get_active_subnet()`` are timed the same way in the same rounds, for (a) and (b). Each ratio is printed with a 95%
bootstrap interval over the rounds (this VM moves a ratio by up to +-0.05 between runs of the same code).
Ends with ``RESULT train_min=.. train_mid=.. train_max=.. infer_min=.. infer_mid=.. infer_max=.. recal=..``
(plus ``ofa_train_min=..`` etc. with the peer, ``recal_floor=..``: the plain pass plus one read of every BN input,
in the same rounds, and ``retained=1`` or ``0``).
By default the process keeps freed memory for reuse, as the engine's CLIs do (:mod:`nas.runtime`; both sides of
every ratio run in this one process); ``--no-retain-memory`` measures under glibc's default malloc.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from nas.runtime import retain_freed_memory
from search_spaces import MBv3Arch, create_space
from supernets import Supernet, create_supernet, recalibrate_bn
from supernets.ops import ElasticBatchNorm2d


def mid_arch(space) -> MBv3Arch:
    n = space.n_stages * space.max_depth
    mid = lambda xs: xs[len(xs) // 2]  # noqa: E731
    return MBv3Arch(ks=(mid(space.kernels),) * n, e=(mid(space.expands),) * n,
                    d=(mid(space.depths),) * space.n_stages, r=mid(space.resolutions))


def interleaved(fns: list[Callable[[], None]], repeats: int, warmup: int = 2,
                rounds: list[list[float]] | None = None) -> list[float]:
    """Median time of each of ``fns`` run in turn ``repeats`` times; the per-round times go to ``rounds``."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    if rounds is not None:
        rounds[:] = times
    return [statistics.median(t) for t in times]


def ratio_interval(a: list[float], b: list[float], *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of median(a) / median(b), resampling whole rounds (a and b paired by round)."""
    x, y = np.asarray(a), np.asarray(b)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    ratios = np.median(x[idx], axis=1) / np.median(y[idx], axis=1)
    lo, hi = np.quantile(ratios, [0.025, 0.975])
    return float(lo), float(hi)


def interval_text(label: str, a: list[float], b: list[float]) -> str:
    lo, hi = ratio_interval(a, b)
    return f"{label} 95% [{lo:.3f}, {hi:.3f}]".strip()


def ofa_pair(arch: MBv3Arch) -> tuple[torch.nn.Module, torch.nn.Module]:
    """OFA's elastic MobileNetV3 (w1.0) with ``arch`` active, and its static subnet (``get_active_subnet``)."""
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3

    torch.manual_seed(0)
    net = OFAMobileNetV3(n_classes=1000, dropout_rate=0.1, width_mult=1.0, ks_list=[3, 5, 7],
                         expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    net.set_active_subnet(ks=[k or 3 for k in arch.ks], e=[e or 3 for e in arch.e], d=list(arch.d))
    return net, net.get_active_subnet(preserve_weight=True)


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> Callable:
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recal-images", type=int, default=2000)
    ap.add_argument("--parts", default="train,infer,recal", help="comma-separated subset of train,infer,recal")
    ap.add_argument("--peer", action=argparse.BooleanOptionalAction,
                    default=importlib.util.find_spec("ofa") is not None,
                    help="also time OFA's own supernet and static subnet (needs the bench extra)")
    ap.add_argument("--retain-memory", action=argparse.BooleanOptionalAction, default=True,
                    help="keep freed memory for reuse (nas.runtime.retain_freed_memory), as the engine's CLIs do")
    args = ap.parse_args()
    retained = retain_freed_memory(args.retain_memory)
    print(f"freed memory retained for reuse: {retained}")
    parts = set(args.parts.split(","))
    if not parts or not parts <= {"train", "infer", "recal"}:
        ap.error(f"--parts must name some of train, infer, recal; got {args.parts!r}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = create_space("ofa_mbv3")
    net = create_supernet("ofa_mbv3", space)
    archs = {"min": space.min_arch(), "mid": mid_arch(space), "max": space.max_arch()}
    results: dict[str, float] = {}
    peers = ["ours", "ofa"] if args.peer else ["ours"]
    print(f"{'arch':5} {'net':5} {'train sup ms':>13} {'train static ms':>16} {'ratio':>6} {'infer sup ms':>13} "
          f"{'infer static ms':>16} {'ratio':>6}")
    for name, arch in archs.items():
        net.set_arch(arch)
        pairs = [(net, net.export(arch).module)] + ([ofa_pair(arch)] if args.peer else [])
        models = [m for pair in pairs for m in pair]
        train = infer = [float("nan")] * len(models)
        train_rounds: list[list[float]] = []
        infer_rounds: list[list[float]] = []
        if "train" in parts:
            x, y = torch.randn(16, 3, 160, 160), torch.randint(0, 1000, (16,))
            for m in models:
                m.train()
            train = interleaved([train_step(m, torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9), x, y)
                                 for m in models], args.repeats, rounds=train_rounds)
        if "infer" in parts:
            for m in models:
                m.eval()
            x1 = torch.randn(1, 3, 224, 224)
            with torch.inference_mode():
                infer = interleaved([lambda m=m, x1=x1: m(x1) for m in models], args.repeats * 4, warmup=5,
                                    rounds=infer_rounds)
        for k, peer in enumerate(peers):
            t_sup, t_static, i_sup, i_static = train[2 * k], train[2 * k + 1], infer[2 * k], infer[2 * k + 1]
            prefix = "" if peer == "ours" else f"{peer}_"
            if "train" in parts:
                results[f"{prefix}train_{name}"] = t_sup / t_static
            if "infer" in parts:
                results[f"{prefix}infer_{name}"] = i_sup / i_static
            spread = "  ".join(interval_text(part, rounds[2 * k], rounds[2 * k + 1])
                               for part, rounds in (("train", train_rounds), ("infer", infer_rounds)) if rounds)
            print(f"{name:5} {peer:5} {t_sup * 1e3:13.1f} {t_static * 1e3:16.1f} {t_sup / t_static:6.3f} "
                  f"{i_sup * 1e3:13.2f} {i_static * 1e3:16.2f} {i_sup / i_static:6.3f}  {spread}")

    if "recal" in parts:
        recal_ratio(net, archs["mid"], args.recal_images, args.repeats, results)
    print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in results.items()) + f" retained={int(retained)}")


def recal_ratio(net: Supernet, arch: MBv3Arch, n_images: int, repeats: int, results: dict[str, float]) -> None:
    """(c), and ``recal_floor``: the plain pass plus one read of every BN input (``x.sum()`` in a pre-hook).

    Any recalibration that computes batch statistics outside the producing conv reads each BN input once more than
    the plain pass, so ``recal_floor`` is what it costs at the least on this machine in the same rounds.
    """
    net.set_arch(arch)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n_images, 3, arch.r, arch.r, generator=g)
    batches = list(images.split(200))
    elastic = [m for m in net.modules() if isinstance(m, ElasticBatchNorm2d)]  # slices call F.batch_norm directly
    inner = {id(m.bn) for m in elastic}
    bns = elastic + [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                     and id(m) not in inner]

    def plain() -> None:
        net.eval()
        with torch.no_grad():
            for b in batches:
                net(b)

    def read_input(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        args[0].sum()  # returns None: a pre-hook that returned the sum would replace the input

    def plain_reading_bn_inputs() -> None:
        handles = [bn.register_forward_pre_hook(read_input) for bn in bns]
        try:
            plain()
        finally:
            for h in handles:
                h.remove()

    rounds: list[list[float]] = []
    t_recal, t_plain, t_floor = interleaved([lambda: recalibrate_bn(net, batches), plain, plain_reading_bn_inputs],
                                            max(3, repeats // 5), 1, rounds=rounds)
    results["recal"], results["recal_floor"] = t_recal / t_plain, t_floor / t_plain
    print(f"BN recalibration over {n_images} images: {t_recal:.2f} s vs plain forward {t_plain:.2f} s "
          f"-> {results['recal']:.3f} ({interval_text('', rounds[0], rounds[1])}); plain forward + one read of each "
          f"BN input {t_floor:.2f} s -> {results['recal_floor']:.3f}")


if __name__ == "__main__":
    main()
