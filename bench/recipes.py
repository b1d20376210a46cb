"""Progressive shrinking (OFA), sandwich (BigNAS), DεpS and SuperTickets vs stand-alone training, on Fashion-MNIST.

Trains the ``ofa_mbv3_fmnist`` supernet through ``nas.train`` (the same hydra configs as the CLI) with each recipe
for the same number of epochs on the same images (equal budget in images seen; the recipes differ in forward/backward
passes per step): progressive shrinking (full -> kernel -> depth -> expand 1 -> expand 2, fixed full-network
teacher, channel sorting; the space has depths {1, 2}, so OFA's two depth phases coincide and one is run), the
sandwich rule with in-place distillation, DεpS (``sampler=deps``: full network alone for the first 54 % of the run,
then beta-ramped sandwich students) and SuperTickets (``sampler=supertickets`` at ``--sparsity``; its subnets are
measured with the pruned weights). "sandwich+prune" is the prune-after-search baseline: the trained sandwich
supernet pruned by global magnitude at the same sparsity over the same tensors, then measured. Then the smallest, a
middle and the largest architecture are trained stand-alone from scratch for that many epochs
(``nas.standalone.train_standalone``; same lr, label smoothing, weight decay, batch size, augmentation and images).
Top-1 is measured on the Fashion-MNIST test set (10k images; ``--test-limit`` for smoke runs), supernet subnets
after BN recalibration on 2000 training images. Every seed repeats everything (``trainer.seed`` and the stand-alone
seed); with >= 2 seeds each figure gets a 95 % t-interval half-width and the paired differences DεpS - PS and DεpS -
sandwich are tested.
Ends with ``RESULT <recipe>_<min|mid|max>=.. ... <recipe>_<arch>_hw=..`` (top-1, %; recipes ps, sandwich, deps,
tickets, sandwich_pruned, alone).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from scipy import stats

from nas.checkpoints import load_supernet
from nas.conf import CONF_DIR
from nas.data import DataModule, create_data
from nas.evaluation import EvalSet, evaluate_subnets
from nas.standalone import evaluate_accuracy, train_standalone
from nas.train.resize import resize_to
from nas.train.run import run_train
from nas.train.samplers.supertickets import global_magnitude_masks, prunable_parameters
from search_spaces import MBv3Arch, create_space
from supernets import create_supernet

REPO = Path(__file__).resolve().parents[1]
SPACE = "ofa_mbv3_fmnist"


def mid_arch(space) -> MBv3Arch:
    """Every gene at its middle choice (kernel 5, expand 3, depth 2, resolution 28 for ofa_mbv3_fmnist)."""
    return space.decode(np.array([len(g.choices) // 2 for g in space.genes()]))


def ps_phases(epochs: int, lr: float) -> list[dict]:
    """OFA's phases, ``epochs - 4`` for the full net and one each after; later phases use lower lrs as in OFA
    (same shape as conf/sampler/progressive.yaml: x1, x0.6, x0.4, x0.2, x0.4 of the full net's lr)."""
    if epochs < 5:
        raise ValueError(f"progressive shrinking runs 5 phases here; give --epochs >= 5, got {epochs}")
    spec = [("full", {"ks": "max", "e": "max", "d": "max"}, 1, epochs - 4, 1.0),
            ("kernel", {"ks": "all", "e": "max", "d": "max"}, 1, 1, 0.6),
            ("depth", {"ks": "all", "e": "max", "d": "all"}, 2, 1, 0.4),
            ("expand_1", {"ks": "all", "e": "top2", "d": "all"}, 4, 1, 0.2),
            ("expand_2", {"ks": "all", "e": "all", "d": "all"}, 4, 1, 0.4)]
    return [{"name": n, "choices": c, "n_subnets": k, "epochs": e, "lr": lr * f} for n, c, k, e, f in spec]


SAMPLER = {"ps": "progressive", "sandwich": "sandwich", "deps": "deps", "tickets": "supertickets"}
LABEL = {"ps": "progressive shrinking", "sandwich": "sandwich + inplace KD", "deps": "DεpS",
         "tickets": "SuperTickets", "sandwich_pruned": "sandwich+prune", "alone": "stand-alone (x3)"}


def train_recipe(name: str, args: argparse.Namespace, out: Path, seed: int = 0) -> float:
    common = [f"trainer.seed={seed}", f"search_space={SPACE}", f"data.kwargs.train_limit={args.train_limit}",
              f"trainer.epochs={args.epochs}",
              f"trainer.lr={args.lr}", f"trainer.batch_size={args.batch_size}", f"trainer.threads={args.threads}",
              "trainer.eval_every=0", "trainer.progress=false", f"out_dir={out}", f"resume={str(args.resume).lower()}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="train", overrides=[*common, f"sampler={SAMPLER[name]}"])
    if name == "tickets":
        cfg.sampler.kwargs.target_sparsity = args.sparsity
    if name == "ps":
        cfg.sampler.kwargs.phases = ps_phases(args.epochs, args.lr)
    start = time.perf_counter()
    run_train(cfg)
    return time.perf_counter() - start


class Loader:
    """Seeded, augmented training batches of one data module resized to one resolution (stand-alone training)."""

    def __init__(self, data: DataModule, size: int, batch_size: int, seed: int) -> None:
        self.data, self.size, self.bs, self.seed, self.epoch = data, size, batch_size, seed, 0

    def __len__(self) -> int:
        return self.data.split_size("train") // self.bs

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.data.split_size("train"))
        gen = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        self.epoch += 1
        for b in range(len(self)):
            x, y = self.data.get("train", order[b * self.bs : (b + 1) * self.bs])
            yield resize_to(self.data.augment(x, gen), self.size, channels_last=True), y


def test_batches(data: DataModule, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(resize_to(b.x, size, channels_last=True), b.y) for b in data.batches("test", batch_size=500)]


@torch.no_grad()
def prune_after_search(net: torch.nn.Module, sparsity: float) -> float:
    """Global magnitude pruning of the trained supernet over SuperTickets' default tensors (the baseline)."""
    weights = prunable_parameters(net, r"weight$", r"^(stem|classifier|head)\.|matrices")
    masks = global_magnitude_masks(weights, sparsity)
    for n, p in weights.items():
        p.mul_(masks[n].to(p.dtype))
    return sparsity


def interval(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    hw = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), hw


def run_seed(seed: int, args: argparse.Namespace, space, archs: dict, data: DataModule,
             seconds: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    evalset = EvalSet(data, split="test", calib_images=2000, calib_batch=200, seed=0)
    for recipe in args.recipes:
        out = args.out_dir / f"{recipe}_s{seed}"
        seconds.setdefault(recipe, []).append(train_recipe(recipe, args, out, seed))
        print(f"{recipe} s{seed}: trained in {seconds[recipe][-1]:.0f}s, load average {os.getloadavg()[0]:.2f}",
              flush=True)
        net = load_supernet(out)
        results[recipe] = {k: r["top1"] for k, r in zip(archs, evaluate_subnets(net, list(archs.values()), evalset))}
        if recipe == "sandwich" and "tickets" in args.recipes:
            prune_after_search(net, args.sparsity)
            rows = evaluate_subnets(net, list(archs.values()), evalset)
            results["sandwich_pruned"] = {k: r["top1"] for k, r in zip(archs, rows)}
    alone: dict[str, float] = {}
    start = time.perf_counter()
    for k, arch in archs.items():
        torch.manual_seed(seed)
        module = create_supernet("ofa_mbv3", space).export(arch).module
        loader = Loader(data, arch.r, args.batch_size, seed=seed)
        train_standalone(module, loader, epochs=args.epochs, lr=args.lr, weight_decay=3e-5, label_smoothing=0.1,
                         grad_clip=None, seed=seed)
        alone[k] = 100.0 * evaluate_accuracy(module, test_batches(data, arch.r))
    seconds.setdefault("alone", []).append(time.perf_counter() - start)
    results["alone"] = alone
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6, help="total epochs of each recipe and of each stand-alone net")
    ap.add_argument("--train-limit", type=int, default=20000,
                    help="training images (seeded subset of 55k); 20k x 6 epochs trains each recipe in ~10-16 min "
                         "at 1 thread on the shared 2-core host (load-dependent)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--recipes", default="ps,sandwich,deps,tickets")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--test-limit", type=int, default=None, help="measure on this many test images (default: 10k)")
    ap.add_argument("--sparsity", type=float, default=0.5, help="SuperTickets' target sparsity (and the baseline's)")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="run directory (default: a fresh outputs/bench_recipes/<timestamp>)")
    ap.add_argument("--resume", action="store_true",
                    help="continue the runs in --out-dir (finished recipes are not retrained; their 'train s' is then "
                         "only the resumed part)")
    args = ap.parse_args()
    args.recipes = args.recipes.split(",")
    unknown = sorted(set(args.recipes) - set(SAMPLER))
    if unknown:
        ap.error(f"unknown recipes {unknown}; choose from {sorted(SAMPLER)}")
    if args.out_dir is None:
        if args.resume:
            ap.error("--resume needs the --out-dir of the run to continue")
        args.out_dir = REPO / "outputs" / "bench_recipes" / time.strftime("%Y%m%d-%H%M%S")
    torch.set_num_threads(args.threads)
    space = create_space(SPACE)
    archs = {"min": space.min_arch(), "mid": mid_arch(space), "max": space.max_arch()}
    data = create_data("fashion_mnist", train_limit=args.train_limit, test_limit=args.test_limit)
    seeds = [int(x) for x in args.seeds.split(",")]
    seconds: dict[str, list[float]] = {}
    per_seed = [run_seed(seed, args, space, archs, data, seconds) for seed in seeds]
    names = [r for r in (*args.recipes, "sandwich_pruned", "alone") if r in per_seed[0]]
    print(f"Fashion-MNIST test top-1 (%), space {SPACE}, {args.epochs} epochs on {args.train_limit} training images, "
          f"batch {args.batch_size}, lr {args.lr}, {args.threads} thread(s), seeds {seeds}, 95% t-intervals")
    for k, a in archs.items():
        print(f"  {k}: {a.id}  MACs {space.macs(a) / 1e6:.2f}M  params {space.params(a) / 1e3:.1f}k")
    print(f"{'recipe':<22}{'min':>16}{'mid':>16}{'max':>16}{'train s':>10}")
    stat = {r: {k: interval([res[r][k] for res in per_seed]) for k in archs} for r in names}
    for r in names:
        cells = "".join(f"{m:>9.2f}+-{h:<5.2f}" for m, h in stat[r].values())
        secs = np.mean(seconds[r]) if r in seconds else float("nan")
        print(f"{LABEL[r]:<22}{cells}{secs:>10.0f}")
    for other in ("ps", "sandwich"):
        if "deps" in names and other in names and len(seeds) > 1:
            for k in archs:
                d, h = interval([res["deps"][k] - res[other][k] for res in per_seed])
                verdict = "significant" if abs(d) > h else "not significant"
                print(f"paired deps - {other} ({k}): {d:+.2f} +- {h:.2f}: {verdict}")
    print("RESULT " + " ".join([f"{r}_{k}={stat[r][k][0]:.2f}" for r in names for k in archs] +
                               [f"{r}_{k}_hw={stat[r][k][1]:.2f}" for r in names for k in archs]))


if __name__ == "__main__":
    main()
