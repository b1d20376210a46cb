"""Ranking consistency of NB201 supernet training under different samplers (uniform, PA&DA, ShiftNAS).

For each sampler and seed, the NB201 weight-sharing supernet of the stand-alone table's space is trained by the
project's trainer (:class:`nas.train.Trainer`: one path per step, SGD-Nesterov, cosine, grad clip 5, no
augmentation) on the same Fashion-MNIST training subset as the table, for the same number of epochs. Then every
sampled cell is evaluated with inherited weights after BN recalibration on fixed training images, on a fixed seeded
subset of the test set. Kendall tau-b and Spearman rho against the stand-alone table (``bench/nb201_standalone.py``)
are reported per run and averaged over seeds. Per-run inherited accuracies are written to ``--out-dir`` as runs
finish, so finished runs are skipped on restart (and an interrupted run resumes from its trainer checkpoint).

Samplers: uniform (SPOS), PA&DA (path + data importance; Lu et al., CVPR 2023), ShiftNAS (complexity-bin
probability shift; Zhang et al., ICCV 2023).

    python bench/nb201_ranking.py --epochs 20 --seeds 0,1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._fmnist import fixed_subset, load_split  # noqa: E402
from bench.nb201_standalone import read_rows, sample_cells  # noqa: E402
from nas.data import DataModule  # noqa: E402
from nas.standalone import evaluate_accuracy  # noqa: E402
from nas.train import Sampler, TrainConfig, Trainer, create_sampler  # noqa: E402
from nas.train.samplers_pada import PADASampler  # noqa: E402
from nas.train.samplers_shiftnas import ShiftNASSampler  # noqa: E402
from search_spaces import create_space  # noqa: E402
from search_spaces.base import SearchSpace  # noqa: E402
from supernets import create_supernet, recalibrate_bn  # noqa: E402

SAMPLER_NAMES = ("uniform", "pada", "shiftnas")


class TensorData(DataModule):
    """The benchmark's fixed tensors (already at the space's resolution) as a data module for the trainer."""

    name, in_chans, n_classes, crop_pad, flip = "fmnist_tensors", 1, 10, 0, False

    def __init__(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.splits = splits
        self.image_size = int(splits["train"][0].shape[-1])

    def split_size(self, split: str) -> int:
        return int(self.splits[self.check_split(split)][1].numel())

    def get(self, split: str, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.splits[self.check_split(split)]
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return x[idx], y[idx]


def make_sampler(name: str, space: SearchSpace, *, seed: int, steps: int, args: argparse.Namespace,
                 heldout: list[tuple[torch.Tensor, torch.Tensor]]) -> Sampler:
    if name == "uniform":
        return create_sampler("uniform", space, label_smoothing=0.0, seed=seed)
    if name == "pada":
        return create_sampler("pada", space, epochs=args.epochs, data=bool(args.pada_data), floor=args.pada_floor,
                              unbiased=bool(args.pada_unbiased), seed=seed)
    if name == "shiftnas":
        sampler = create_sampler("shiftnas", space, n_bins=args.shift_bins, every_steps=args.shift_every,
                                 warmup_steps=int(args.shift_warmup * steps), lr=args.shift_lr, seed=seed)
        sampler.bind_heldout(heldout)
        return sampler
    raise ValueError(f"unknown sampler {name!r}; choose from {list(SAMPLER_NAMES)}")


def train_supernet(name: str, space: SearchSpace, data: dict[str, Any], *, seed: int,
                   args: argparse.Namespace) -> tuple[nn.Module, float, Sampler]:
    """One run of the project's :class:`~nas.train.Trainer` (checkpoints under ``outputs/``)."""
    dm = data["module"]
    steps = dm.split_size("train") // args.batch_size * args.epochs
    sampler = make_sampler(name, space, seed=seed, steps=steps, args=args, heldout=data["heldout"])
    torch.manual_seed(seed)
    net = create_supernet("nb201", space)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      momentum=0.9, schedule="cosine", grad_clip=5.0, seed=seed, device="cpu", threads=args.threads,
                      eval_every=0, progress=False, tensorboard=False)
    out = ROOT / "outputs" / "nb201_ranking" / f"{name}_s{seed}_e{args.epochs}"
    result = Trainer(net, dm, sampler, cfg, out).fit(resume=True)
    return net, result.seconds, sampler


def inherited_accuracies(net: nn.Module, space: SearchSpace, archs: list[Any], data: dict[str, Any]) -> list[float]:
    accs = []
    for arch in archs:
        with net.use(arch):
            recalibrate_bn(net, data["recal"])
            accs.append(evaluate_accuracy(net, data["eval"]))
    return accs


def _write_run(path: Path, archs: list[Any], accs: list[float], meta: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        fh.write(f"# {json.dumps(meta, sort_keys=True)}\n")
        w = csv.writer(fh)
        w.writerow(["arch_str", "inherited_acc"])
        w.writerows([a.id, f"{acc:.4f}"] for a, acc in zip(archs, accs))
    os.replace(tmp, path)


def _read_run(path: Path) -> tuple[dict[str, float], dict[str, Any]]:
    with open(path) as fh:
        meta = json.loads(fh.readline()[1:])
        return {r["arch_str"]: float(r["inherited_acc"]) for r in csv.DictReader(fh)}, meta


def load_data(table: list[dict[str, str]], args: argparse.Namespace) -> dict[str, Any]:
    n_train = int(table[0]["n_train"])
    xtr, ytr = load_split("train", size=args.resolution)
    xte, yte = load_split("test", size=args.resolution)
    train_idx, held_idx = fixed_subset(len(ytr), [n_train, args.n_heldout], args.split_seed)
    (eval_idx,) = fixed_subset(len(yte), [args.n_eval], args.eval_seed)
    recal = xtr[train_idx[np.random.default_rng(args.eval_seed).permutation(n_train)[:args.recal_images]]]
    return {"module": TensorData({"train": (xtr[train_idx], ytr[train_idx]), "val": (xtr[held_idx], ytr[held_idx]),
                                  "test": (xte[eval_idx], yte[eval_idx])}),
            "heldout": [(xtr[held_idx], ytr[held_idx])],
            "recal": list(recal.split(args.batch_size)),
            "eval": DataLoader(TensorDataset(xte[eval_idx], yte[eval_idx]), batch_size=1000)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, default=ROOT / "bench/data/nb201_fmnist_standalone.csv")
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench/data/nb201_ranking")
    p.add_argument("--samplers", default=",".join(SAMPLER_NAMES))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--space", default="nb201_tiny")
    p.add_argument("--resolution", type=int, default=16, help="as in the stand-alone table's command")
    p.add_argument("--n-cells", type=int, default=64, help="as in the stand-alone table's command")
    p.add_argument("--sample-seed", type=int, default=0, help="as in the stand-alone table's command")
    p.add_argument("--split-seed", type=int, default=0, help="as in the stand-alone table's command")
    p.add_argument("--epochs", type=int, default=30, help="the training budget, identical for every sampler")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=2.5e-4)
    p.add_argument("--n-heldout", type=int, default=256, help="held-out train images (ShiftNAS bin losses)")
    p.add_argument("--n-eval", type=int, default=2000, help="fixed test-set subset for inherited accuracy")
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--recal-images", type=int, default=256, help="training images for BN recalibration")
    p.add_argument("--pada-floor", type=float, default=0.02)
    p.add_argument("--pada-data", type=int, default=1)
    p.add_argument("--pada-unbiased", type=int, default=0)
    p.add_argument("--shift-bins", type=int, default=8)
    p.add_argument("--shift-every", type=int, default=50)
    p.add_argument("--shift-warmup", type=float, default=0.2, help="fraction of steps before logit updates")
    p.add_argument("--shift-lr", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = read_rows(args.table)
    if not table:
        raise SystemExit(f"stand-alone table {args.table} is empty or missing: run bench/nb201_standalone.py first")
    truth = {r["arch_str"]: float(r["test_acc"]) for r in table}
    space = create_space(args.space, resolution=args.resolution)
    archs = [space.from_ordinal(o) for o in sample_cells(space, args.n_cells, args.sample_seed)]
    missing = set(truth) - {a.id for a in archs}
    if missing:
        raise SystemExit(f"{len(missing)} table cells are not in this cell sample; check --n-cells/--sample-seed")
    samplers = args.samplers.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] | None = None
    for name in samplers:
        for seed in seeds:
            path = args.out_dir / f"{name}_s{seed}_e{args.epochs}.csv"
            if path.exists():
                continue
            data = data or load_data(table, args)
            net, seconds, sampler = train_supernet(name, space, data, seed=seed, args=args)
            t0 = time.time()
            accs = inherited_accuracies(net, space, archs, data)
            meta = {"sampler": name, "seed": seed, "train_seconds": round(seconds, 1),
                    "eval_seconds": round(time.time() - t0, 1), "args": {k: str(v) for k, v in vars(args).items()}}
            if isinstance(sampler, ShiftNASSampler):
                meta["bin_probs"] = [round(float(x), 4) for x in sampler.probs()]
            if isinstance(sampler, PADASampler):
                meta["path_probs"] = [[round(float(x), 4) for x in q] for q in sampler.path.probs]
            _write_run(path, archs, accs, meta)
            print(f"  [{name} s{seed}] trained {seconds:.0f}s, evaluated {meta['eval_seconds']}s", flush=True)
    report(args, samplers, seeds, truth)


def report(args: argparse.Namespace, samplers: list[str], seeds: list[int], truth: dict[str, float]) -> None:
    print(f"\nstand-alone cells: {len(truth)}; epochs={args.epochs}; seeds={seeds}")
    print("tau_trained: Kendall tau over the cells that learn at all (stand-alone accuracy > 0.15); train_s is the "
          "wall time of the last (possibly resumed) training process on a shared CPU")
    print(f"{'sampler':<10} {'seed':>4} {'kendall_tau':>11} {'spearman':>9} {'tau_trained':>11} {'mean_acc':>9} "
          f"{'train_s':>8}")
    mean_tau: dict[str, float] = {}
    for name in samplers:
        taus, rhos, lives = [], [], []
        for seed in seeds:
            path = args.out_dir / f"{name}_s{seed}_e{args.epochs}.csv"
            if not path.exists():
                continue
            inherited, meta = _read_run(path)
            keys = sorted(truth)
            a, b = [truth[k] for k in keys], [inherited[k] for k in keys]
            tau, rho = stats.kendalltau(a, b).statistic, stats.spearmanr(a, b).statistic
            live = [k for k in keys if truth[k] > 0.15]
            tau_live = stats.kendalltau([truth[k] for k in live], [inherited[k] for k in live]).statistic
            taus.append(tau)
            rhos.append(rho)
            lives.append(tau_live)
            print(f"{name:<10} {seed:>4} {tau:11.4f} {rho:9.4f} {tau_live:11.4f} {np.mean(b):9.4f} "
                  f"{meta['train_seconds']:8.0f}")
        if taus:
            mean_tau[name] = float(np.mean(taus))
            print(f"{name:<10} {'mean':>4} {np.mean(taus):11.4f} {np.mean(rhos):9.4f} {np.mean(lives):11.4f}")
    print("RESULT " + " ".join(f"tau_{k}={v:.4f}" for k, v in mean_tau.items()))


if __name__ == "__main__":
    main()
