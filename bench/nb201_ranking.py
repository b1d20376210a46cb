"""Ranking consistency of NB201 supernet training under different samplers (uniform, PA&DA, ShiftNAS, GM-NAS, DεpS).

For each sampler and seed, the NB201 weight-sharing supernet of the stand-alone table's space is trained by the
project's trainer (:class:`nas.train.Trainer`: one path per step, SGD-Nesterov, cosine, grad clip 5, no
augmentation) on the same Fashion-MNIST training subset as the table, for the same number of epochs. Then every
sampled cell is evaluated with inherited weights after BN recalibration on fixed training images, on a fixed seeded
subset of the test set. Kendall tau-b and Spearman rho against the stand-alone table (``bench/nb201_standalone.py``)
are reported per run and averaged over seeds. Per-run inherited accuracies are written to ``--out-dir`` as runs
finish, so finished runs are skipped on restart (and an interrupted run resumes from its trainer checkpoint).

Samplers: uniform (SPOS), PA&DA (path + data importance; Lu et al., CVPR 2023), ShiftNAS (complexity-bin
probability shift; Zhang et al., ICCV 2023), GM-NAS (few-shot family split by gradient matching at 1/3 and 2/3 of
the run; Hu et al., ICLR 2022), DεpS (full network first, then beta-ramped sandwich students; ECCV 2024).

The cells are the truth table's own (its ``ordinal`` column). With a multi-seed truth (``bench/nb201_truth.py``: a
``seed`` column) the truth is the mean over seeds and ``tau_truth_self`` its seed-to-seed tau. Seeds are paired
(the same seeds for every sampler): each sampler's mean tau gets a 95 % t-interval over seeds, and its difference
to uniform a paired 95 % interval; a difference is called significant when that interval excludes 0.
Top-10 % precision: the share of the truth's best 10 % cells among the supernet's best 10 %.

    python bench/nb201_ranking.py --epochs 20 --seeds 0,1,2
    python bench/nb201_ranking.py --table bench/data/nb201_truth.csv --out-dir outputs/nb201_ranking_truth
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
from bench._tables import read_rows  # noqa: E402
from bench.nb201_truth import agreement  # noqa: E402
from nas.data import DataModule  # noqa: E402
from nas.standalone import evaluate_accuracy  # noqa: E402
from nas.train import Sampler, TrainConfig, Trainer, create_sampler  # noqa: E402
from nas.train.samplers.pada import PADASampler  # noqa: E402
from nas.train.samplers.shiftnas import ShiftNASSampler  # noqa: E402
from search_spaces import create_space  # noqa: E402
from search_spaces.base import SearchSpace  # noqa: E402
from supernets import create_supernet, recalibrate_bn  # noqa: E402

SAMPLER_NAMES = ("uniform", "pada", "shiftnas", "gmnas", "deps")


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
    if name == "gmnas":
        return create_sampler("gmnas", space, split_epochs=gmnas_splits(args.epochs), n_batches=args.gm_batches,
                              batch_size=args.batch_size, seed=seed)
    if name == "deps":
        return create_sampler("deps", space, extremes="cost", warmup=args.deps_warmup, ramp=args.deps_ramp,
                              n_random=args.deps_random, label_smoothing=0.0, seed=seed)
    raise ValueError(f"unknown sampler {name!r}; choose from {list(SAMPLER_NAMES)}")


def gmnas_splits(epochs: int) -> list[int]:
    """Two splits, at 1/3 and 2/3 of the run (GM-NAS on NB201: epochs 15 and 30 of 50)."""
    return sorted({max(1, epochs // 3), max(1, 2 * epochs // 3)})


def train_supernet(name: str, space: SearchSpace, data: dict[str, Any], *, seed: int,
                   args: argparse.Namespace) -> tuple[nn.Module, float, Sampler]:
    """One run of the project's :class:`~nas.train.Trainer` (checkpoints under ``outputs/``)."""
    dm = data["module"]
    steps = dm.split_size("train") // args.batch_size * args.epochs
    sampler = make_sampler(name, space, seed=seed, steps=steps, args=args, heldout=data["heldout"])
    torch.manual_seed(seed)
    net = create_supernet("fewshot", space, base="nb201", members=2 ** len(gmnas_splits(args.epochs))) \
        if name == "gmnas" else create_supernet("nb201", space)
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
    p.add_argument("--gm-batches", type=int, default=10, help="GM-NAS: gradient batches per choice (paper: 100)")
    p.add_argument("--deps-warmup", type=float, default=0.54)
    p.add_argument("--deps-ramp", type=float, default=0.02)
    p.add_argument("--deps-random", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = read_rows(args.table)
    if not table:
        raise SystemExit(f"stand-alone table {args.table} is empty or missing: run bench/nb201_standalone.py first")
    space = create_space(args.space, resolution=args.resolution)
    truth, archs, self_tau = truth_of(table, space)
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
    report(args, samplers, seeds, truth, self_tau)


def truth_of(table: list[dict[str, str]], space: SearchSpace) -> tuple[dict[str, float], list[Any], dict[str, float]]:
    """(mean accuracy per cell, the cells in table order, the table's self-agreement (``nb201_truth.agreement``;
    empty for a one-seed table))."""
    accs: dict[str, list[float]] = {}
    ordinals: dict[str, int] = {}
    for r in table:
        accs.setdefault(r["arch_str"], []).append(float(r["test_acc"]))
        ordinals[r["arch_str"]] = int(r["ordinal"])
    seeds = sorted({int(r["seed"]) for r in table}) if "seed" in table[0] else [0]
    self_tau = agreement(table, seeds) if len(seeds) > 1 else {}
    if len(seeds) > 1:  # only cells finished in every seed
        accs = {k: v for k, v in accs.items() if len(v) == len(seeds)}
    truth = {k: float(np.mean(v)) for k, v in accs.items()}
    return truth, [space.from_ordinal(ordinals[k]) for k in truth], self_tau


def _interval(values: list[float]) -> tuple[float, float]:
    """(mean, 95 % t-interval half-width; nan for one value)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def top_precision(truth: list[float], inherited: list[float], frac: float = 0.1) -> float:
    k = max(1, int(round(frac * len(truth))))
    best_t, best_i = set(np.argsort(truth)[::-1][:k]), set(np.argsort(inherited)[::-1][:k])
    return len(best_t & best_i) / k


def report(args: argparse.Namespace, samplers: list[str], seeds: list[int], truth: dict[str, float],
           self_tau: dict[str, float] | None = None) -> None:
    print(f"\nstand-alone cells: {len(truth)}; epochs={args.epochs}; seeds={seeds}")
    print("tau_trained: Kendall tau over the cells that learn at all (stand-alone accuracy > 0.15); train_s is the "
          "wall time of the last (possibly resumed) training process on a shared CPU")
    print(f"{'sampler':<10} {'seed':>4} {'kendall_tau':>11} {'spearman':>9} {'tau_trained':>11} {'mean_acc':>9} "
          f"{'train_s':>8}")
    mean_tau: dict[str, float] = {}
    half: dict[str, float] = {}
    top10: dict[str, float] = {}
    per_seed: dict[str, dict[int, float]] = {}
    for name in samplers:
        taus, rhos, lives, tops = [], [], [], []
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
            tops.append(top_precision(a, b))
            per_seed.setdefault(name, {})[seed] = tau
            print(f"{name:<10} {seed:>4} {tau:11.4f} {rho:9.4f} {tau_live:11.4f} {np.mean(b):9.4f} "
                  f"{meta['train_seconds']:8.0f}  top10 {tops[-1]:.3f}")
        if taus:
            mean_tau[name], half[name] = _interval(taus)
            top10[name] = float(np.mean(tops))
            print(f"{name:<10} {'mean':>4} {np.mean(taus):11.4f} {np.mean(rhos):9.4f} {np.mean(lives):11.4f}"
                  f"   +-{half[name]:.4f} (95% t, {len(taus)} seeds)  top10 {np.mean(tops):.3f}")
    base = per_seed.get("uniform", {})
    for name in samplers:
        common = sorted(set(base) & set(per_seed.get(name, {})))
        if name == "uniform" or len(common) < 2:
            continue
        diff, hw = _interval([per_seed[name][s] - base[s] for s in common])
        verdict = "significant" if abs(diff) > hw else "not significant"
        print(f"paired {name} - uniform: {diff:+.4f} +- {hw:.4f} over seeds {common}: {verdict}")
    self_tau = self_tau or {}
    parts = [f"tau_truth_self={self_tau['tau_seed_pairs_mean']:.4f}"] if "tau_seed_pairs_mean" in self_tau else []
    if "tau_half_means" in self_tau:  # two disjoint means of half the seeds each: the truth's own reproducibility
        parts.append(f"tau_truth_halves={self_tau['tau_half_means']:.4f}")
    parts += [f"tau_{k}={v:.4f}" for k, v in mean_tau.items()] + [f"hw_{k}={v:.4f}" for k, v in half.items()]
    parts += [f"top10_{k}={v:.3f}" for k, v in top10.items()]
    print("RESULT " + " ".join(parts))


if __name__ == "__main__":
    main()
