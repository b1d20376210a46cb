"""Progressive shrinking (OFA) vs the sandwich rule (BigNAS) vs stand-alone training, on Fashion-MNIST.

Trains the ``ofa_mbv3_fmnist`` supernet twice through ``nas.train`` (the same hydra configs as the CLI): progressive
shrinking (full -> kernel -> depth -> expand 1 -> expand 2, fixed full-network teacher, channel sorting; the space
has depths {1, 2}, so OFA's two depth phases coincide and one is run) and the sandwich rule with in-place
distillation, each for the same total number of epochs. Then trains the smallest, a middle and the largest
architecture stand-alone from scratch for that many epochs (``nas.standalone.train_standalone``; same lr, label
smoothing, weight decay, batch size, augmentation and subset of training images). Top-1 is measured on the real
Fashion-MNIST test set (10k images), supernet subnets after BN recalibration on 2000 training images.
Ends with ``RESULT ps_min=.. ps_mid=.. ps_max=.. sandwich_min=.. sandwich_mid=.. sandwich_max=.. alone_min=..
alone_mid=.. alone_max=..`` (top-1, %).
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

from nas.data import DataModule, create_data
from nas.evaluation import EvalSet, evaluate_subnets
from nas.standalone import evaluate_accuracy, train_standalone
from nas.train import load_supernet
from nas.train.resize import resize_to
from nas.train.run import run_train
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


def train_recipe(name: str, args: argparse.Namespace, out: Path) -> float:
    common = [f"search_space={SPACE}", f"data.kwargs.train_limit={args.train_limit}", f"trainer.epochs={args.epochs}",
              f"trainer.lr={args.lr}", f"trainer.batch_size={args.batch_size}", f"trainer.threads={args.threads}",
              "trainer.eval_every=0", "trainer.progress=false", f"out_dir={out}", f"resume={str(args.resume).lower()}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose(config_name="train", overrides=[*common, f"sampler={'progressive' if name == 'ps' else name}"])
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6, help="total epochs of each recipe and of each stand-alone net")
    ap.add_argument("--train-limit", type=int, default=20000,
                    help="training images (seeded subset of 55k); 20k x 6 epochs trains each recipe in ~10-16 min "
                         "at 1 thread on the shared 2-core host (load-dependent)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="run directory (default: a fresh outputs/bench_recipes/<timestamp>)")
    ap.add_argument("--resume", action="store_true",
                    help="continue the runs in --out-dir (finished recipes are not retrained; their 'train s' is then "
                         "only the resumed part)")
    args = ap.parse_args()
    if args.out_dir is None:
        if args.resume:
            ap.error("--resume needs the --out-dir of the run to continue")
        args.out_dir = REPO / "outputs" / "bench_recipes" / time.strftime("%Y%m%d-%H%M%S")
    torch.set_num_threads(args.threads)
    space = create_space(SPACE)
    archs = {"min": space.min_arch(), "mid": mid_arch(space), "max": space.max_arch()}
    data = create_data("fashion_mnist", train_limit=args.train_limit)
    results: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for recipe in ("ps", "sandwich"):
        out = args.out_dir / recipe
        seconds[recipe] = train_recipe(recipe, args, out)
        print(f"{recipe}: trained in {seconds[recipe]:.0f}s, load average {os.getloadavg()[0]:.2f}", flush=True)
        net = load_supernet(out)
        evalset = EvalSet(data, split="test", calib_images=2000, calib_batch=200, seed=0)
        rows = evaluate_subnets(net, list(archs.values()), evalset)
        results[recipe] = {k: r["top1"] for k, r in zip(archs, rows)}
    alone: dict[str, float] = {}
    start = time.perf_counter()
    for k, arch in archs.items():
        torch.manual_seed(0)
        module = create_supernet("ofa_mbv3", space).export(arch).module
        loader = Loader(data, arch.r, args.batch_size, seed=0)
        train_standalone(module, loader, epochs=args.epochs, lr=args.lr, weight_decay=3e-5, label_smoothing=0.1,
                         grad_clip=None, seed=0)
        alone[k] = 100.0 * evaluate_accuracy(module, test_batches(data, arch.r))
    seconds["alone"] = time.perf_counter() - start
    results["alone"] = alone
    print(f"Fashion-MNIST test top-1 (%), space {SPACE}, {args.epochs} epochs on {args.train_limit} training images, "
          f"batch {args.batch_size}, lr {args.lr}, {args.threads} thread(s)")
    for k, a in archs.items():
        print(f"  {k}: {a.id}  MACs {space.macs(a) / 1e6:.2f}M  params {space.params(a) / 1e3:.1f}k")
    print(f"{'recipe':<22}{'min':>8}{'mid':>8}{'max':>8}{'train s':>10}")
    label = {"ps": "progressive shrinking", "sandwich": "sandwich + inplace KD", "alone": "stand-alone (x3)"}
    for r in ("ps", "sandwich", "alone"):
        v = results[r]
        print(f"{label[r]:<22}{v['min']:>8.2f}{v['mid']:>8.2f}{v['max']:>8.2f}{seconds[r]:>10.0f}")
    for r in ("ps", "sandwich"):
        gap = [results[r][k] - alone[k] for k in archs]
        print(f"{'gap ' + r + ' - alone':<22}" + "".join(f"{g:>+8.2f}" for g in gap))
    print("RESULT " + " ".join(f"{r if r != 'alone' else 'alone'}_{k}={results[r][k]:.2f}"
                               for r in ("ps", "sandwich", "alone") for k in archs))


if __name__ == "__main__":
    main()
