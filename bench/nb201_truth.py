"""A stand-alone NB201 ground truth that can separate training methods: a wide, stratified cell sample, seeds averaged.

``bench/nb201_standalone.py``'s 64 uniformly drawn cells cluster at 0.80-0.84 test accuracy, within about twice
the seed-to-seed noise (single-seed SD ~0.008), so the table agrees with itself across training seeds at only
Kendall tau ~0.33 (20 cells, seeds 0 and 1). This generator widens the spread and averages the noise:

* **cells**: stratified by the number of parametric (``nor_conv``) edges, with equal shares for 0, 1, 2 and >= 3
  convolutions (uniform sampling puts ~2/3 of the cells in the crowded >= 3 group); parameter-free ops and ``none``
  edges therefore appear often, and cells whose output is disconnected from the input (chance accuracy, all tied)
  are capped at ``--max-disconnected`` of the sample;
* **seeds**: every cell is trained with each of ``--seeds`` (init + data order), and the truth is the mean;
* **resumable**: one CSV row per (cell, seed) run, appended and fsync'ed as it finishes; finished runs are skipped
  on restart, and a torn last line from a kill is dropped. Runs are ordered cell-major, so a partial table holds
  complete cells;
* **agreement**: the summary reports Kendall tau between every pair of seeds over the cells complete in all seeds
  (single-seed agreement), between seed 0 and the mean of the other seeds, and, with 4 or more seeds, between the
  means of two disjoint halves of the seeds (``tau_half_means``: how well a table averaged over that many seeds
  reproduces itself).

Default build (~360 runs of 10-60 s on one core, about 3-4 CPU-hours; it has not been run in full yet):

    python bench/nb201_truth.py --out bench/data/nb201_truth.csv [--shard 0/2 & --shard 1/2]

Ends with ``RESULT cells=.. complete=.. runs=.. tau_seed_pairs_mean=.. tau_seed_pairs_min=.. tau_one_vs_rest=..``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._fmnist import fixed_subset, load_split  # noqa: E402
from bench._tables import append_row, read_rows, start_table  # noqa: E402
from nas.standalone import evaluate_accuracy, train_standalone  # noqa: E402
from search_spaces import create_space  # noqa: E402
from search_spaces.nb201 import NB201_EDGES, NB201Space  # noqa: E402
from supernets.nb201 import NB201Network  # noqa: E402

COLUMNS = ["arch_str", "ordinal", "n_conv", "connected", "seed", "test_acc", "macs", "params", "train_seconds",
           "epochs", "n_train", "batch_size", "lr", "weight_decay"]
STRATA = ((0,), (1,), (2,), (3, 4, 5, 6))


def connected(ops: tuple[str, ...]) -> bool:
    """Whether the cell's output node (3) is reachable from its input (0) through non-``none`` edges."""
    reach = {0}
    for (to, frm), op in sorted(zip(NB201_EDGES, ops)):
        if op != "none" and frm in reach:
            reach.add(to)
    return 3 in reach


def n_conv(ops: tuple[str, ...]) -> int:
    return sum(op.startswith("nor_conv") for op in ops)


def select_cells(space: NB201Space, n: int, seed: int, max_disconnected: float = 0.05) -> list[int]:
    """``n`` ordinals: equal shares of the conv-count strata, disconnected cells capped, seeded order."""
    rng = np.random.default_rng(seed)
    info = [(i, n_conv(a.ops), connected(a.ops)) for i, a in
            ((i, space.from_ordinal(i)) for i in range(space.cardinality()))]
    cap = int(max_disconnected * n)
    shares = [n // len(STRATA) + (1 if s < n % len(STRATA) else 0) for s in range(len(STRATA))]
    chosen: list[int] = []
    for stratum, share in zip(STRATA, shares):
        pool = np.array([i for i, k, _ in info if k in stratum])
        for i in rng.permutation(pool):
            if share == 0:
                break
            if not info[int(i)][2]:
                if cap == 0:
                    continue
                cap -= 1
            chosen.append(int(i))
            share -= 1
    return [chosen[i] for i in rng.permutation(len(chosen))]


def agreement(rows: list[dict[str, str]], seeds: list[int]) -> dict[str, float]:
    """Seed-to-seed Kendall tau over the cells finished in every seed."""
    acc: dict[str, dict[int, float]] = {}
    for r in rows:
        acc.setdefault(r["arch_str"], {})[int(r["seed"])] = float(r["test_acc"])
    complete = [a for a, d in acc.items() if all(s in d for s in seeds)]
    out = {"cells": float(len(acc)), "complete": float(len(complete))}
    if len(complete) < 3 or len(seeds) < 2:
        return out
    cols = {s: np.array([acc[a][s] for a in complete]) for s in seeds}
    pairs = [float(kendalltau(cols[a], cols[b])[0]) for a, b in itertools.combinations(seeds, 2)]
    rest = np.mean([cols[s] for s in seeds[1:]], axis=0)
    mean = np.mean([cols[s] for s in seeds], axis=0)
    out |= {"tau_seed_pairs_mean": float(np.mean(pairs)), "tau_seed_pairs_min": float(np.min(pairs)),
            "tau_one_vs_rest": float(kendalltau(cols[seeds[0]], rest)[0]),
            "acc_iqr": float(np.subtract(*np.percentile(mean, [75, 25])))}
    if len(seeds) >= 4:  # two disjoint k-seed means (k = half the seeds): how well a k-seed-mean table reproduces
        k = len(seeds) // 2
        halves = [np.mean([cols[s] for s in part], axis=0) for part in (seeds[:k], seeds[k:2 * k])]
        out["tau_half_means"] = float(kendalltau(*halves)[0])
        out["half_seeds"] = float(k)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "bench/data/nb201_truth.csv")
    p.add_argument("--space", default="nb201_tiny")
    p.add_argument("--resolution", type=int, default=16)
    p.add_argument("--n-cells", type=int, default=120)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--max-disconnected", type=float, default=0.05)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--n-test", type=int, default=None, help="score on this many test images (default: all 10k)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="train at most this many new runs, then stop")
    p.add_argument("--shard", default="0/1", help="i/n: train only the cells at positions i mod n of the sample (n "
                   "processes, e.g. one per core, append to the same table)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    space = create_space(a.space, resolution=a.resolution)
    xtr, ytr = load_split("train", size=a.resolution)
    xte, yte = load_split("test", size=a.resolution)
    if a.n_test:
        xte, yte = xte[: a.n_test], yte[: a.n_test]
    (train_idx,) = fixed_subset(len(ytr), [a.n_train], a.split_seed)
    train_set = TensorDataset(xtr[train_idx], ytr[train_idx])
    test_loader = DataLoader(TensorDataset(xte, yte), batch_size=1000)
    cmd = "python bench/nb201_truth.py " + " ".join(argv if argv is not None else sys.argv[1:])
    start_table(a.out, [
        f"command: {cmd.strip()}",
        f"space: {space.spec()}; Fashion-MNIST train subset: first {a.n_train} of permutation(60000, "
        f"seed={a.split_seed}); test: {'first ' + str(a.n_test) if a.n_test else 'full 10k'} test images",
        f"training: nas.standalone.train_standalone SGD-nesterov momentum 0.9, cosine per step, grad clip 5, "
        f"epochs={a.epochs} batch={a.batch_size} lr={a.lr} wd={a.weight_decay}; seeds {a.seeds}",
        f"cells: {a.n_cells} ordinals, equal shares of n_conv strata {STRATA}, disconnected <= "
        f"{a.max_disconnected:.0%}, sample seed {a.sample_seed}",
    ], COLUMNS)
    shard, n_shards = (int(x) for x in a.shard.split("/"))
    done = {(r["arch_str"], int(r["seed"])) for r in read_rows(a.out)}
    trained = 0
    cells = select_cells(space, a.n_cells, a.sample_seed, a.max_disconnected)
    for ordinal in cells[shard::n_shards]:
        arch = space.from_ordinal(ordinal)
        for seed in a.seeds:
            if (arch.id, seed) in done:
                continue
            if a.limit is not None and trained >= a.limit:
                break
            loader = DataLoader(train_set, batch_size=a.batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(seed))
            t0 = time.time()
            net = train_standalone(NB201Network(space, arch), loader, epochs=a.epochs, lr=a.lr,
                                   weight_decay=a.weight_decay, seed=seed)
            acc = evaluate_accuracy(net, test_loader)
            sec = time.time() - t0
            append_row(a.out, {"arch_str": arch.id, "ordinal": ordinal, "n_conv": n_conv(arch.ops),
                               "connected": int(connected(arch.ops)), "seed": seed, "test_acc": f"{acc:.4f}",
                               "macs": space.macs(arch), "params": space.params(arch), "train_seconds": f"{sec:.1f}",
                               "epochs": a.epochs, "n_train": a.n_train, "batch_size": a.batch_size, "lr": a.lr,
                               "weight_decay": a.weight_decay}, COLUMNS)
            done.add((arch.id, seed))
            trained += 1
            print(f"{ordinal:>6} seed {seed} {arch.id:<92} {acc:6.4f} {sec:6.1f}s", flush=True)
    rows = read_rows(a.out)
    stats = agreement(rows, a.seeds)
    print("RESULT " + " ".join(f"{k}={v:.4f}" if not float(v).is_integer() else f"{k}={int(v)}"
                               for k, v in (stats | {"runs": float(len(rows))}).items()))


if __name__ == "__main__":
    main()
