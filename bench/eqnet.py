"""EQ-Net on Fashion-MNIST: one elastic-quantisation supernet vs separate QAT vs Double Rounding, and a searched
mixed-precision front, over seeds with 95 % intervals.

Network: one architecture of the Fashion-MNIST OFA-MBv3 space (``ARCH``, 28 px, a mid-size subnet) in the joint
space ``quant_ofa_mbv3_fmnist`` (W/A bits 3..8 per layer, first and last layer at 8/8). Every run starts from the
full-precision embedded supernet ``nas/embedded/ofa_mbv3_fmnist`` (its weights loaded into the quantised supernet;
the embedded *quantised* supernet is not on this branch), and every run has the same budget: ``--steps`` optimizer
steps of ``--batch`` images (Adam, cosine, no weight decay). An EQ-Net step trains three subnets (highest, random,
lowest bits, chained distillation, WDR), a QAT step one. Per seed:

1. EQ-Net supernet (``quantizer=eqnet``, ``sampler=eqnet``): top-1 of the uniform W8A8, W6A6, W4A4 policies and of
   ``--policies`` seeded mixed-precision policies (drawn the CQAP way: a target average bit-width uniform in
   [3, 8], then each layer's weight and activation bits around it); the same policies for every seed;
2. QAT: the same network calibrated and trained at W8A8 alone, and at W4A4 alone;
3. Double Rounding supernet (``quantizer=double_rounding``, same sampler and budget): the uniform policies.

All policies use per-channel symmetric weights and asymmetric activations. Top-1 is on a fixed subset of the
Fashion-MNIST test set (``--test-images``) after BN recalibration on ``--calib-images`` training images.

The searched front is random search with measured top-1: the non-dominated mixed policies in (model size, average
activation bits, mean top-1 over seeds). ``front_dominates`` holds when, for every uniform policy, some front policy
is no larger, has no more average activation bits and is at least as accurate (on the seed means); ``dominated``
counts the (seed, uniform policy) pairs for which that holds within the seed.

Default budget (200 steps of 32 images per run, 4 runs and 22 evaluations per seed, 3 seeds, 1 thread): 974 s
wall at ``nice -n 5`` on the shared 2-core machine (EQ-Net run ~120 s, Double Rounding ~100 s, QAT ~35 s).
``--quick`` is a smoke run for the tests. Ends with
``RESULT front_dominates=.. dominated=k/n w8a8=.. w8a8_hw=.. w6a6=.. ... double_rounding_w4a4=.. .._hw=..``
(top-1 in %, ``_hw`` the 95 % half-width, t-distribution over seeds).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from scipy import stats

from bench._supernet_runs import step_config, train
from nas.data import create_data
from nas.embedded import load as load_embedded
from nas.evaluation import EvalSet, evaluate_subnets
from nas.train.samplers.eqnet import EQNetSampler
from nas.train.samplers.fixed import FixedArchSampler
from search_spaces import create_space
from search_spaces.quant import JointArch, JointSpace
from search_spaces.quant_costs import average_bits, model_size_bytes
from supernets import Supernet, create_supernet
from supernets.quant import QuantSupernet, calibrate

ARCH = {"ks": [7, None, 3, None, 3, 7, 7, 5, 3, None], "e": [2, None, 3, None, 2, 2, 4, 4, 2, None],
        "d": [1, 1, 2, 2, 1], "r": 28}  # r28-k7e2-k3e3-k3e2.k7e2-k7e4.k5e4-k3e2
MODES: dict[str, Any] = JointSpace.DEPLOY_MODES  # per-channel symmetric weights, asymmetric activations
UNIFORM = (8, 6, 4)
KEYS = ["w8a8", "w6a6", "w4a4", "qat_w8a8", "qat_w4a4", "double_rounding_w8a8", "double_rounding_w6a6",
        "double_rounding_w4a4"]


def uniform(space: JointSpace) -> dict[str, JointArch]:
    return {f"w{b}a{b}": space.policy_for(space.fixed_arch, b, b, **MODES) for b in UNIFORM}


def mixed_policies(space: JointSpace, n: int, seed: int) -> list[JointArch]:
    """CQAP-style draws: a target average in [lo, hi] bits, each free layer's bits the target +- 1.5, rounded."""
    rng = np.random.default_rng(seed)
    base = space.policy_for(space.fixed_arch, 8, 8, **MODES)
    lo, hi = min(space.w_bits), max(space.w_bits)
    n_free = len(space.slots) - len(space.fixed_slots)
    out = []
    for _ in range(n):
        target = rng.uniform(lo, hi)
        bits = [np.clip(np.rint(target + rng.uniform(-1.5, 1.5, n_free)), lo, hi).astype(int).tolist()
                for _ in range(2)]
        out.append(space.with_bits(base, *bits))
    return out


def from_fp(space: JointSpace, fp: Supernet, quantizer: str) -> QuantSupernet:
    net = cast(QuantSupernet, create_supernet("quant", space, quantizer=quantizer))
    with net.unwrapped() as inner:
        inner.load_state_dict(fp.state_dict())
    return net


def run_seed(seed: int, args: argparse.Namespace, space: JointSpace, fp: Supernet, mixed: list[JointArch],
             root: Path) -> dict[str, Any]:
    data = create_data("fashion_mnist", train_limit=args.train_images, val_size=1000, seed=seed)
    cfg = step_config(args.steps, data, batch_size=args.batch, lr=args.lr, optimizer="adam", weight_decay=0.0,
                      warmup_epochs=0.0, seed=seed, threads=args.threads)
    evalset = EvalSet(data, split="test", n_images=args.test_images, calib_images=args.calib_images,
                      calib_batch=min(250, args.calib_images), seed=0)
    evaluate = lambda net, archs: [r["top1"] for r in evaluate_subnets(net, archs, evalset)]  # noqa: E731
    sampler = lambda: EQNetSampler(space, seed=seed, calib_steps=args.calib_steps)  # noqa: E731
    pols = uniform(space)
    out: dict[str, Any] = {}
    torch.manual_seed(seed)
    eq = from_fp(space, fp, "eqnet")
    out["time_eqnet"] = train(eq, data, sampler(), cfg, root / f"s{seed}_eqnet")
    top = evaluate(eq, [*pols.values(), *mixed])
    out |= dict(zip(pols, top[: len(pols)]))
    out["mixed"] = top[len(pols):]
    torch.manual_seed(seed)
    dr = from_fp(space, fp, "double_rounding")
    out["time_dr"] = train(dr, data, sampler(), cfg, root / f"s{seed}_dr")
    out |= {f"double_rounding_{k}": v for k, v in zip(pols, evaluate(dr, list(pols.values())))}
    calib_x = data.get("train", np.arange(256))[0]
    for name in ("w8a8", "w4a4"):
        torch.manual_seed(seed)
        qat = from_fp(space, fp, "eqnet")
        qat.set_arch(pols[name])
        calibrate(qat, calib_x, archs=[pols[name]], steps=args.calib_steps)
        out[f"time_qat_{name}"] = train(qat, data, FixedArchSampler(space, arch=pols[name]), cfg,
                                        root / f"s{seed}_qat_{name}")
        out[f"qat_{name}"] = evaluate(qat, [pols[name]])[0]
    return out


def interval(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def pareto(size: np.ndarray, abits: np.ndarray, top1: np.ndarray) -> list[int]:
    """Indices not dominated in (size lower, activation bits lower, top-1 higher)."""
    keep = []
    for i in range(len(size)):
        better = (size <= size[i]) & (abits <= abits[i]) & (top1 >= top1[i])
        strictly = (size < size[i]) | (abits < abits[i]) | (top1 > top1[i])
        if not np.any(better & strictly):
            keep.append(i)
    return keep


def dominated(size: np.ndarray, abits: np.ndarray, top1: np.ndarray, u_size: float, u_abits: float,
              u_top1: float) -> bool:
    return bool(np.any((size <= u_size) & (abits <= u_abits + 1e-9) & (top1 >= u_top1)))


def report(space: JointSpace, mixed: list[JointArch], runs: list[dict[str, Any]]) -> None:
    pols = uniform(space)
    size = np.array([model_size_bytes(space, p) for p in mixed], float)
    abits = np.array([average_bits(space, p, "a") for p in mixed])
    wbits = np.array([average_bits(space, p, "w") for p in mixed])
    top = np.array([r["mixed"] for r in runs])  # (seeds, policies)
    mean = top.mean(0)
    front = sorted(pareto(size, abits, mean), key=lambda i: size[i])
    ci = {k: interval([r[k] for r in runs]) for k in KEYS}
    print("\n| policy | size (kB) | avg W bits | avg A bits | EQ-Net top-1 | separate QAT | Double Rounding |")
    print("|---|---|---|---|---|---|---|")
    for k, p in pols.items():
        qat = f"{ci['qat_' + k][0]:.2f} +- {ci['qat_' + k][1]:.2f}" if f"qat_{k}" in ci else "-"
        print(f"| {k} | {model_size_bytes(space, p) / 1e3:.1f} | {average_bits(space, p, 'w'):.2f} | "
              f"{average_bits(space, p, 'a'):.2f} | {ci[k][0]:.2f} +- {ci[k][1]:.2f} | {qat} | "
              f"{ci['double_rounding_' + k][0]:.2f} +- {ci['double_rounding_' + k][1]:.2f} |")
    print(f"\nSearched front ({len(front)} of {len(mixed)} measured mixed policies, EQ-Net supernet, mean over "
          f"{len(runs)} seeds):\n\n| size (kB) | avg W bits | avg A bits | top-1 | 95% half-width |")
    print("|---|---|---|---|---|")
    for i in front:
        print(f"| {size[i] / 1e3:.1f} | {wbits[i]:.2f} | {abits[i]:.2f} | {mean[i]:.2f} | "
              f"{interval(top[:, i].tolist())[1]:.2f} |")
    holds, per_seed = [], 0
    for k, p in pols.items():
        u_size, u_a = model_size_bytes(space, p), average_bits(space, p, "a")
        holds.append(dominated(size, abits, mean, u_size, u_a, ci[k][0]))
        per_seed += sum(dominated(size, abits, top[s], u_size, u_a, runs[s][k]) for s in range(len(runs)))
        print(f"{k}: front policy at <= its size and A bits with >= its top-1: {holds[-1]}")
    times = {k: np.mean([r[k] for r in runs]) for k in runs[0] if k.startswith("time_")}
    print("mean training seconds per run: " + ", ".join(f"{k[5:]} {v:.0f}" for k, v in times.items()))
    result = [f"front_dominates={str(all(holds)).lower()}", f"dominated={per_seed}/{len(pols) * len(runs)}"]
    result += [f"{k}={ci[k][0]:.2f} {k}_hw={ci[k][1]:.2f}" for k in KEYS]
    print("RESULT " + " ".join(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per training run")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--train-images", type=int, default=10000)
    ap.add_argument("--test-images", type=int, default=1000, help="fixed subset of the test set")
    ap.add_argument("--calib-images", type=int, default=250, help="training images for BN recalibration")
    ap.add_argument("--policies", type=int, default=16, help="mixed-precision policies measured for the front")
    ap.add_argument("--calib-steps", type=int, default=40, help="clipping ranges tried when initialising quantisers")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 1 step, 2 policies, 100 test images")
    ap.add_argument("--out", default="outputs/bench/eqnet")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.steps, args.batch, args.policies, args.test_images = 2, 1, 16, 2, 100
        args.train_images, args.calib_steps, args.calib_images = 1000, 4, 32
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    fp, _ = load_embedded("ofa_mbv3_fmnist")
    bits = list(range(3, 9))  # as conf/search_space/quant_ofa_mbv3_fmnist.yaml (EQ-Net: 3..8 on mobile nets)
    space = cast(JointSpace, create_space("quant_ofa_mbv3_fmnist", fixed_arch=ARCH, w_bits=bits, a_bits=bits))
    mixed = mixed_policies(space, args.policies, seed=1234)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    print(f"arch {space.fixed_arch.id}, {args.steps} steps x {args.batch} images per run, {args.seeds} seeds, "
          f"{args.test_images} test images, init: embedded fp supernet ofa_mbv3_fmnist", flush=True)
    runs = [run_seed(s, args, space, fp, mixed, root) for s in range(args.seeds)]
    report(space, mixed, runs)
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
