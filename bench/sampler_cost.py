"""Per-step training cost of each sampler relative to uniform (one subnet per step), on Fashion-MNIST.

Each sampler trains the same supernet (``ofa_mbv3_tiny`` by default) for ``--steps`` steps of one batch through
:class:`nas.train.Trainer`; the cost of a step is the median of its logged per-step wall time after ``--skip``
warm-up steps, and the ratio is against ``uniform``. DεpS is measured in its shrinking phase (``warmup=0``; its
warm-up phase costs one full-network pass per step) with ``aggregate`` sum and mean. GM-NAS trains one subnet per
step like uniform; its split (gradient passes per choice of every candidate gene) is timed once, separately.
Ends with ``RESULT <sampler>=<ratio> ... gmnas_split_s=..``. On a shared CPU the ratios move with the load.

    python bench/sampler_cost.py --steps 12
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.data import create_data  # noqa: E402
from nas.train import TrainConfig, Trainer, create_sampler  # noqa: E402
from search_spaces import create_space  # noqa: E402
from supernets import create_supernet  # noqa: E402

SAMPLERS = {
    "uniform": ("uniform", {"n_subnets": 1}),
    "sandwich": ("sandwich", {"n_random": 2}),
    "deps_sum": ("deps", {"warmup": 0.0, "ramp": 0.0, "n_random": 2, "aggregate": "sum"}),
    "deps_mean": ("deps", {"warmup": 0.0, "ramp": 0.0, "n_random": 2, "aggregate": "mean"}),
    "supertickets": ("supertickets", {"n_random": 2, "prune_start": 0.0, "prune_every": 0.5, "recal_images": 0}),
    "shiftnas_gen": ("shiftnas", {"generator": True, "every_epochs": None, "n_bins": 4, "n_probe": 256}),
    "gmnas": ("gmnas", {"split_epochs": [1000], "n_batches": 2, "batch_size": 64}),
}


def step_seconds(name: str, args: argparse.Namespace, data) -> float:
    sampler_name, kw = SAMPLERS[name]
    space = create_space(args.space)
    torch.manual_seed(0)
    net = create_supernet("fewshot", space, base="ofa_mbv3", members=2) if name == "gmnas" else \
        create_supernet("ofa_mbv3", space)
    sampler = create_sampler(sampler_name, space, seed=0, **kw)
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=0.05, threads=args.threads, eval_every=0,
                      progress=False, tensorboard=False, log_every=1, max_steps_per_epoch=args.steps, amp=False)
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(net, data, sampler, cfg, tmp).fit()
        rows = np.genfromtxt(Path(tmp) / "metrics.csv", delimiter=",", names=True)
    return float(np.median(rows["elapsed_s"][args.skip:]))


def split_seconds(args: argparse.Namespace, data) -> float:
    space = create_space(args.space)
    net = create_supernet("fewshot", space, base="ofa_mbv3", members=2)
    sampler = create_sampler("gmnas", space, n_batches=2, batch_size=64, split_groups=["ks", "e"], seed=0)
    sampler.bind(net, steps_per_epoch=1, epochs=1, data=data)
    t0 = time.perf_counter()
    sampler.split_member(0, epoch=0)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="ofa_mbv3_tiny")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--skip", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = create_data("fashion_mnist", train_limit=a.batch_size * a.steps, val_size=500)
    secs = {n: step_seconds(n, a, data) for n in a.samplers.split(",")}
    base = secs.get("uniform")
    for n, s in secs.items():
        print(f"{n:<14} {1000 * s:8.1f} ms/step" + (f"  x{s / base:.2f} of uniform" if base else ""))
    split = split_seconds(a, data)
    print(f"gmnas split of one sub-supernet (ks+e genes, 2 batches per choice): {split:.1f}s")
    print("RESULT " + " ".join(f"{n}={s / base:.2f}" for n, s in secs.items() if base) + f" gmnas_split_s={split:.1f}")


if __name__ == "__main__":
    main()
