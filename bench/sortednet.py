"""SortedNet on Fashion-MNIST: nested many-in-one training, monotone accuracy along the sorted chain, search-free
selection (Valipour et al., arXiv 2309.00255).

The elastic ViT supernet (``vit_tiny``: 28x28 grey input, patch 7) is trained with the ``sortednet`` sampler:
each step draws ``g_acc`` nested sub-models and accumulates their losses before one AdamW step. By default the
draws are over the sorted chain theta_1 subset ... subset theta_10 that raises embed, heads, MLP ratio, depth
round-robin (width first), weighted 4,3,2,2,1,...,1 towards the small members (uniform: ``--chain-weights ''``);
``--distribution grid`` draws each dimension of the 108-point grid depth x embed x heads x MLP uniformly
instead (the paper's default P_B). The chain is then evaluated once on the
10k test images with inherited weights, the smallest sub-model is trained alone through the same trainer for the
same number of optimizer steps, and the chain serves search-free selection under MACs and parameter budgets.

    python bench/sortednet.py                      # seeds 0,1,2: ~8 CPU-minutes (2000 steps each)
    python bench/sortednet.py --steps 3000         # longer run
    python bench/sortednet.py --distribution grid --chain-order depth,embed,heads,mlp

Ends with ``RESULT monotone_frac=.. smallest_gap=..`` (means over the seeds; gap = stand-alone minus inherited
top-1 of the smallest sub-model, points).
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
from nas.train.samplers.fixed import FixedArchSampler  # noqa: E402
from nas.train.samplers.sortednet import SortedNetSampler  # noqa: E402
from search_spaces.sorted import SortedChain  # noqa: E402
from supernets import create_supernet  # noqa: E402

SUPERNET_OF = {"vit_tiny": "vit", "ofa_mbv3_tiny": "ofa_mbv3"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="vit_tiny", choices=sorted(SUPERNET_OF))
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps of each training run")
    p.add_argument("--g-acc", type=int, default=4, help="sub-models accumulated per step")
    p.add_argument("--distribution", default="chain", choices=["grid", "chain"])
    p.add_argument("--chain-order", default="embed,heads,mlp,depth",
                   help="comma-separated dims raised round-robin along the chain (width first)")
    p.add_argument("--chain-weights", default="4,3,2,2,1,1,1,1,1,1",
                   help="comma-separated draw weights of the chain members, smallest first ('' = uniform); the "
                        "default favours the small members of vit_tiny's 10-member chain, which get the fewest "
                        "updates from the rest of the chain")
    p.add_argument("--always", default="", help="chain ends in every step: smallest, largest or smallest,largest")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="adamw")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--margin", type=float, default=3.0, help="accepted smallest gap, top-1 points")
    p.add_argument("--augment", action="store_true", help="random crop + flip (off: short runs converge faster)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; RESULT holds their means")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", type=Path, default=ROOT / "outputs/bench_sortednet")
    args = p.parse_args(argv)
    runs = [run(args, int(seed)) for seed in args.seeds.split(",")]
    mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    print(f"\nover seeds {args.seeds}: monotone fractions {[round(r['monotone_frac'], 3) for r in runs]}, "
          f"smallest gaps {[round(r['smallest_gap'], 2) for r in runs]}")
    print(f"RESULT monotone_frac={mean['monotone_frac']:.3f} smallest_gap={mean['smallest_gap']:.2f} "
          f"margin={args.margin:.1f} seeds={len(runs)} chain_len={int(mean['chain_len'])} "
          f"smallest_top1={mean['smallest_top1']:.2f} largest_top1={mean['largest_top1']:.2f} "
          f"smallest_alone_top1={mean['smallest_alone_top1']:.2f} steps={int(mean['steps'])} g_acc={args.g_acc} "
          f"cpu_s={sum(r['cpu_s'] for r in runs):.0f} min_monotone_frac={min(r['monotone_frac'] for r in runs):.3f} "
          f"max_smallest_gap={max(r['smallest_gap'] for r in runs):.2f}")


def run(args: argparse.Namespace, seed: int) -> dict[str, float]:
    """Train, measure and print one seed's chain; returns its figures."""
    args = argparse.Namespace(**{**vars(args), "seed": seed, "out_dir": args.out_dir / f"seed{seed}"})
    t0, cpu0 = time.perf_counter(), time.process_time()
    aug = {} if args.augment else {"crop_pad": 0, "flip": False}
    data = create_data("fashion_mnist", seed=args.seed, **aug)
    torch.manual_seed(seed)  # the supernet's initial weights (the trainer seeds only data order and dropout)
    net = create_supernet(SUPERNET_OF[args.space], args.space)
    cfg = step_config(args.steps, data, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                      weight_decay=args.weight_decay, warmup_epochs=0.0, seed=args.seed, threads=args.threads)
    order = args.chain_order.split(",") if args.chain_order else None
    weights = [float(w) for w in args.chain_weights.split(",")] if args.chain_weights else None
    sampler = SortedNetSampler(net.space, g_acc=args.g_acc, distribution=args.distribution, chain_order=order,
                               chain_weights=weights, always=[a for a in args.always.split(",") if a],
                               seed=args.seed)
    print(f"SortedNet: {args.space}, grid {dict(zip(sampler.grid.names, sampler.grid.shape))} "
          f"({len(sampler.grid)} sub-models), g_acc={args.g_acc}, {args.distribution} distribution "
          f"(chain order {order or list(sampler.grid.names)}, weights {weights or 'uniform'}), "
          f"{cfg.epochs} x {cfg.max_steps_per_epoch} steps of {args.batch_size}", flush=True)
    train(net, data, sampler, cfg, args.out_dir / "sorted")
    archs = sampler.chain_archs()
    acc = test_top1(net, data, archs, seed=args.seed)

    torch.manual_seed(seed)
    alone = create_supernet(SUPERNET_OF[args.space], args.space)
    train(alone, data, FixedArchSampler(alone.space, arch=archs[0], seed=args.seed), cfg, args.out_dir / "alone")
    alone_acc = test_top1(alone, data, archs[:1], seed=args.seed)[0]

    sp = net.space
    chain = SortedChain.measure(sp, archs, "macs", accuracy=acc)
    by_params = SortedChain.measure(sp, archs, "params", accuracy=acc)
    print(f"\n{'#':>2} {'grid point':>12} {'arch':<34} {'MMACs':>7} {'kparams':>8} {'top1':>6}")
    for i, (idx, a) in enumerate(zip(sampler.chain, archs)):
        print(f"{i:>2} {str(idx):>12} {a.id:<34} {sp.macs(a) / 1e6:7.3f} {sp.params(a) / 1e3:8.1f} {acc[i]:6.2f}")
    print(f"smallest trained alone ({cfg.epochs} x {cfg.max_steps_per_epoch} steps): {alone_acc:.2f}")

    print("\nsearch-free selection (largest sub-model within budget):")
    for frac in (0.1, 0.25, 0.5, 1.0):
        for ch, total in ((chain, chain.costs[-1]), (by_params, by_params.costs[-1])):
            try:
                s = ch.select(frac * total)
            except ValueError as exc:
                print(f"  {ch.metric:>6} <= {frac:4.0%} of max -> {exc}")
                continue
            print(f"  {ch.metric:>6} <= {frac:4.0%} of max -> #{s.index} {s.arch.id} ({s.cost:.0f}, "
                  f"top1 {s.accuracy:.2f})")

    mono = chain.monotone_fraction()
    gap = alone_acc - acc[0]
    dips = [f"{i}->{i + 1}" for i in range(len(acc) - 1) if acc[i + 1] < acc[i]]
    print(f"\nmonotone pairs {mono:.2f} (decreasing: {dips or 'none'}); smallest gap {gap:+.2f} points "
          f"({'within' if gap <= args.margin else 'OUTSIDE'} the {args.margin:.1f}-point margin); "
          f"{time.perf_counter() - t0:.0f}s wall, {time.process_time() - cpu0:.0f}s CPU, {args.threads} thread(s)")
    print(f"seed {seed}: monotone_frac={mono:.3f} smallest_gap={gap:.2f} smallest_top1={acc[0]:.2f} "
          f"largest_top1={acc[-1]:.2f} smallest_alone_top1={alone_acc:.2f}", flush=True)
    return {"monotone_frac": mono, "smallest_gap": gap, "chain_len": len(archs), "smallest_top1": acc[0],
            "largest_top1": acc[-1], "smallest_alone_top1": alone_acc,
            "steps": cfg.epochs * (cfg.max_steps_per_epoch or 0), "cpu_s": time.process_time() - cpu0}

if __name__ == "__main__":
    main()
