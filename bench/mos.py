"""Mixture-of-Supernets vs plain weight sharing on Fashion-MNIST (Jawahar et al., ACL Findings 2024).

The same elastic ViT space (``vit_tiny``) is trained three times under the same step budget and sampler (HAT's
sandwich rule: the largest, one random and the smallest subnet per step, all on labels, gradients summed):
plain weight sharing, MoS layer-wise and MoS neuron-wise (m=2 experts in the MLP's fc1/fc2, router hidden 128).
Five fixed subnets (smallest, largest, three seeded random ones) are evaluated with inherited weights (MoS:
materialised mixed weights; the exported dense subnet is checked to compute the same logits) and compared with
the same subnets trained stand-alone through the same trainer for the same number of steps.

    python bench/mos.py                 # ~5.5 CPU-minutes (600 steps per run, 8 runs)
    python bench/mos.py --steps 200     # quick (at 200 steps MoS was behind plain weight sharing)

Ends with ``RESULT gap_plain=.. gap_mos_layer=.. gap_mos_neuron=..`` (mean stand-alone minus inherited top-1,
points; smaller is better).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._supernet_runs import step_config, test_top1, train  # noqa: E402
from nas.data import create_data  # noqa: E402
from nas.train import SandwichSampler  # noqa: E402
from nas.train.samplers.fixed import FixedArchSampler  # noqa: E402
from supernets import create_supernet  # noqa: E402

VARIANTS = {"plain": {}, "mos_layer": {"mos_experts": 2, "mos_mode": "layer"},
            "mos_neuron": {"mos_experts": 2, "mos_mode": "neuron"}}


def fixed_subnets(space, seed: int) -> list:
    rng = np.random.default_rng(seed)
    archs = [space.min_arch(), space.max_arch()]
    while len(archs) < 5:
        a = space.sample(rng)
        if a not in archs:
            archs.append(a)
    return archs


def check_materialised(net, archs, data) -> float:
    """Largest |logit difference| between the supernet and its exported dense subnets on test images."""
    x, _ = data.get("test", np.arange(64))
    worst = 0.0
    net.eval()
    with torch.no_grad():
        for a in archs:
            with net.use(a):
                ref = net(x)
            worst = max(worst, float((net.export(a).module.eval()(x) - ref).abs().max()))
    return worst


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600, help="optimizer steps of every run")
    p.add_argument("--n-random", type=int, default=1, help="random subnets per sandwich step (HAT: 1)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="adamw")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--test-images", type=int, default=5000, help="seeded subset of the 10k test images (0: all)")
    p.add_argument("--augment", action="store_true", help="random crop + flip (off: short runs converge faster)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", type=Path, default=ROOT / "outputs/bench_mos")
    args = p.parse_args(argv)

    t0, cpu0 = time.perf_counter(), time.process_time()
    aug = {} if args.augment else {"crop_pad": 0, "flip": False}
    data = create_data("fashion_mnist", seed=args.seed, **aug)
    cfg = step_config(args.steps, data, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                      weight_decay=args.weight_decay, warmup_epochs=0.0, seed=args.seed, threads=args.threads)
    n_test = args.test_images or None
    inherited: dict[str, list[float]] = {}
    n_params: dict[str, int] = {}
    archs: list = []
    for name, kw in VARIANTS.items():
        torch.manual_seed(args.seed)
        net = create_supernet("vit", "vit_tiny", **kw)
        archs = archs or fixed_subnets(net.space, args.seed)
        n_params[name] = sum(p.numel() for p in net.parameters())
        sampler = SandwichSampler(net.space, n_random=args.n_random, label_smoothing=0.0, kd_ratio=0.0,
                                  student_label_weight=1.0, zero_init_residual=False, seed=args.seed)
        print(f"{name}: {n_params[name]} parameters", flush=True)
        train(net, data, sampler, cfg, args.out_dir / name)
        worst = check_materialised(net, archs, data)
        if worst > 1e-4:
            raise RuntimeError(f"{name}: exported subnet differs from the supernet by {worst:.2e}")
        inherited[name] = test_top1(net, data, archs, n_images=n_test, seed=args.seed)

    alone = []
    for i, a in enumerate(archs):
        torch.manual_seed(args.seed)
        net = create_supernet("vit", "vit_tiny")
        train(net, data, FixedArchSampler(net.space, arch=a, seed=args.seed), cfg, args.out_dir / f"alone{i}")
        alone += test_top1(net, data, [a], n_images=n_test, seed=args.seed)

    sp = net.space
    print(f"\nsupernets: {args.steps} steps of {args.batch_size} (sandwich: max + {args.n_random} random + min, "
          f"{args.optimizer} lr {args.lr}); stand-alone: {args.steps} steps each; top-1 on "
          f"{n_test or 10000} test images")
    print(f"{'subnet':<34} {'MMACs':>6} {'alone':>6} " + " ".join(f"{n:>10}" for n in VARIANTS))
    for i, a in enumerate(archs):
        print(f"{a.id:<34} {sp.macs(a) / 1e6:6.2f} {alone[i]:6.2f} "
              + " ".join(f"{inherited[n][i]:10.2f}" for n in VARIANTS))
    gaps = {n: float(np.mean(np.array(alone) - np.array(inherited[n]))) for n in VARIANTS}
    print("mean gap (alone - inherited): " + ", ".join(f"{n} {g:+.2f}" for n, g in gaps.items()))
    print("parameters: " + ", ".join(f"{n} {c}" for n, c in n_params.items()))
    best = min(gaps, key=gaps.get)
    closed = {n: gaps[n] < gaps["plain"] for n in ("mos_layer", "mos_neuron")}
    print(f"MoS closed the gap vs plain: {closed} (best: {best}); {time.perf_counter() - t0:.0f}s wall, "
          f"{time.process_time() - cpu0:.0f}s CPU")
    print(f"RESULT gap_plain={gaps['plain']:.2f} gap_mos_layer={gaps['mos_layer']:.2f} "
          f"gap_mos_neuron={gaps['mos_neuron']:.2f} mean_alone={np.mean(alone):.2f} "
          + " ".join(f"mean_{n}={np.mean(inherited[n]):.2f}" for n in VARIANTS)
          + f" steps={args.steps} cpu_s={time.process_time() - cpu0:.0f}")


if __name__ == "__main__":
    main()
