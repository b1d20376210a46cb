"""Stand-alone ground truth for the NB201 ranking benchmark: a seeded sample of cells trained on Fashion-MNIST.

Each sampled NAS-Bench-201 cell (Dong & Yang, ICLR 2020) is built as a static network of a small space
(``nb201_tiny``: C=8, N=1, grey input; images resized to 16x16 by default so the whole table fits a shared 2-core
CPU) and trained from scratch with :func:`nas.standalone.train_standalone` on a fixed seeded subset of the
Fashion-MNIST training set, then scored on the full 10k test set. Rows are appended to the CSV as cells finish
(resumable: finished cells are skipped on restart). ``bench/nb201_ranking.py`` compares supernet rankings against
this table.

    python bench/nb201_standalone.py --out bench/data/nb201_fmnist_standalone.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._fmnist import fixed_subset, load_split  # noqa: E402
from bench._tables import append_row, read_rows, start_table  # noqa: E402
from nas.standalone import evaluate_accuracy, train_standalone  # noqa: E402
from search_spaces import create_space  # noqa: E402
from search_spaces.nb201 import NB201IndexMap, NB201Space  # noqa: E402
from supernets.nb201 import NB201Network  # noqa: E402

COLUMNS = ["arch_str", "ordinal", "nb201_index", "test_acc", "macs", "params", "train_seconds",
           "epochs", "n_train", "batch_size", "lr", "weight_decay", "seed"]
SHARED_TABLE = ROOT.parent / "shared" / "yardsticks" / "nb201" / "nats_bench_tss_200ep.csv"


def sample_cells(space: NB201Space, n: int, seed: int) -> list[int]:
    """``n`` distinct project ordinals drawn uniformly without replacement."""
    return [int(i) for i in np.random.default_rng(seed).choice(space.cardinality(), size=n, replace=False)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "bench/data/nb201_fmnist_standalone.csv")
    p.add_argument("--space", default="nb201_tiny")
    p.add_argument("--resolution", type=int, default=16, help="images are resized to this (space resolution)")
    p.add_argument("--n-cells", type=int, default=64)
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the cell sample")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the training subset")
    p.add_argument("--n-train", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0, help="training seed (init + shuffling)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="train at most this many new cells, then stop")
    p.add_argument("--reverse", action="store_true",
                   help="walk the sample from its end (a second process can share the work; finished cells are "
                        "re-read from the table before each cell)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    space = create_space(a.space, resolution=a.resolution)
    index_map = NB201IndexMap.from_csv(SHARED_TABLE) if SHARED_TABLE.exists() else None
    xtr, ytr = load_split("train", size=a.resolution)
    xte, yte = load_split("test", size=a.resolution)
    (train_idx,) = fixed_subset(len(ytr), [a.n_train], a.split_seed)
    train_set = TensorDataset(xtr[train_idx], ytr[train_idx])
    test_loader = DataLoader(TensorDataset(xte, yte), batch_size=1000)

    cmd = "python bench/nb201_standalone.py " + " ".join(argv if argv is not None else sys.argv[1:])
    start_table(a.out, [
        f"command: {cmd.strip()}",
        f"space: {space.spec()}; Fashion-MNIST train subset: first {a.n_train} of permutation(60000, "
        f"seed={a.split_seed}); test: full 10k test set",
        f"training: nas.standalone.train_standalone SGD-nesterov momentum 0.9, cosine per step, grad clip 5, "
        f"epochs={a.epochs} batch={a.batch_size} lr={a.lr} wd={a.weight_decay} seed={a.seed}; cells: "
        f"{a.n_cells} ordinals sampled with seed {a.sample_seed}",
        "nb201_index: NAS-Bench-201 index when the benchmark table was available, else -1",
    ], COLUMNS)
    trained = 0
    print(f"{'#':>3} {'arch':<92} {'acc':>6} {'sec':>6}")
    order = list(enumerate(sample_cells(space, a.n_cells, a.sample_seed)))
    for k, ordinal in order[::-1] if a.reverse else order:
        arch = space.from_ordinal(ordinal)
        if arch.id in {r["arch_str"] for r in read_rows(a.out)}:
            continue
        if a.limit is not None and trained >= a.limit:
            break
        loader = DataLoader(train_set, batch_size=a.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(a.seed))
        t0 = time.time()
        net = train_standalone(NB201Network(space, arch), loader, epochs=a.epochs, lr=a.lr,
                               weight_decay=a.weight_decay, seed=a.seed)
        acc = evaluate_accuracy(net, test_loader)
        sec = time.time() - t0
        append_row(a.out, {"arch_str": arch.id, "ordinal": ordinal,
                        "nb201_index": index_map.index(arch) if index_map else -1, "test_acc": f"{acc:.4f}",
                        "macs": space.macs(arch), "params": space.params(arch), "train_seconds": f"{sec:.1f}",
                        "epochs": a.epochs, "n_train": a.n_train, "batch_size": a.batch_size, "lr": a.lr,
                        "weight_decay": a.weight_decay, "seed": a.seed}, COLUMNS)
        trained += 1
        print(f"{k:>3} {arch.id:<92} {acc:6.4f} {sec:6.1f}", flush=True)
    rows = read_rows(a.out)
    accs = np.array([float(r["test_acc"]) for r in rows]) if rows else np.zeros(1)
    print(f"RESULT cells={len(rows)} acc_min={accs.min():.4f} acc_median={np.median(accs):.4f} "
          f"acc_max={accs.max():.4f} acc_std={accs.std():.4f}")


if __name__ == "__main__":
    main()
