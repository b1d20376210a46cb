"""Accuracy predictors on real measured accuracies: how well they rank from few measurements.

Data (read from ``../shared/yardsticks``, never copied):
* OFA-MBv3 ImageNet: ``ofa_mbv3_imagenet/dev.csv``, architectures de-duplicated by their active choices
  (canonical arch), repeated measurements averaged (1,051 distinct subnets).
* NAS-Bench-201 CIFAR-10 (200-epoch test accuracy): ``nb201/nats_bench_tss_200ep.csv``, all 15,625 cells.

For n_train in {50, 100, 250, 500} and 5 seeded draws, every predictor is fitted on n_train random architectures
and scored on all the remaining ones: Kendall tau, Spearman rho, RMSE (points), precision of the predicted top
10 %, fit and predict seconds, wall and process CPU (means over draws; one thread, so CPU seconds are what the fit
costs on an idle core, wall seconds what it took on the shared machine). Baselines: the training mean (tau 0 by
construction) and ranking by MACs (no training). Ends with ``RESULT tau_ofa_n100=.. top10_ofa_n100=..
tau_ofa_n500=.. fit_s_n500=.. fit_cpu_s_n500=.. tau_nb201_n100=..`` (best predictor per column; fit_s_n500 and
fit_cpu_s_n500 are those of the best-tau predictor at n = 500).

    python bench/predictors.py            # full run
    python bench/predictors.py --quick    # 1 draw, n_train in {100, 500}, 3,000 NB201 test cells
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Run as a script, this file's directory comes first on sys.path and its name would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from predictors import create_predictor, score  # noqa: E402
from predictors.datasets import read_nb201_accuracy_csv, read_ofa_accuracy_csv  # noqa: E402
from search_spaces import SearchSpace, create_space  # noqa: E402

YARDSTICKS = Path(__file__).resolve().parents[1] / "../shared/yardsticks"

#: bench name -> (registered predictor, keyword arguments)
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "ridge_svr_oh": ("ridge_svr", {"features": ["onehot"]}),  # DyNAS-T's predictor (masked one-hot)
    "mlp_oh": ("mlp", {"features": ["onehot"]}),  # OFA's predictor
    "gbt_oh": ("gbt", {"features": ["onehot"]}),
    "ridge_svr": ("ridge_svr", {}),  # the same three with the space's cost priors ("auto" features)
    "mlp": ("mlp", {}),
    "mlp_rank": ("mlp", {"rank_loss": "pairwise"}),
    "gbt": ("gbt", {}),
    "mlp_ensemble": ("mlp_ensemble", {}),
    "gp": ("gp", {}),
    "ensemble": ("ensemble", {}),
}


@dataclass
class Dataset:
    name: str
    space: SearchSpace
    archs: list[Any]
    y: np.ndarray
    macs: np.ndarray


def load_ofa() -> Dataset:
    space = create_space("ofa_mbv3")
    archs, y, _ = read_ofa_accuracy_csv(YARDSTICKS / "ofa_mbv3_imagenet" / "dev.csv", space)
    return Dataset("ofa", space, archs, y, np.array([space.macs(a) for a in archs], dtype=float))


def load_nb201() -> Dataset:
    space = create_space("nb201")
    archs, y = read_nb201_accuracy_csv(YARDSTICKS / "nb201" / "nats_bench_tss_200ep.csv", space=space)
    return Dataset("nb201", space, archs, y, np.array([space.macs(a) for a in archs], dtype=float))


def run_one(data: Dataset, make: Callable[[], Any] | None, n: int, seed: int, max_test: int | None,
            baseline: str = "") -> dict[str, float]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(data.archs))
    tr, te = perm[:n], perm[n:]
    if max_test is not None:
        te = te[:max_test]
    train, test = [data.archs[i] for i in tr], [data.archs[i] for i in te]
    t0, c0 = time.perf_counter(), time.process_time()
    if make is None:  # baselines
        pred = data.macs[te] if baseline == "macs" else np.full(len(te), data.y[tr].mean())
        fit_s = pred_s = fit_cpu = pred_cpu = 0.0
    else:
        model = make().fit(train, data.y[tr])
        fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
        t1, c1 = time.perf_counter(), time.process_time()
        pred = model.predict(test)
        pred_s, pred_cpu = time.perf_counter() - t1, time.process_time() - c1
    out = score(data.y[te], pred)
    if baseline == "macs":
        out["rmse"] = float("nan")  # MACs are not in accuracy units
    return {**out, "fit_s": fit_s, "pred_s": pred_s, "fit_cpu_s": fit_cpu, "pred_cpu_s": pred_cpu}


def bench(data: Dataset, names: Sequence[str], ns: Sequence[int], seeds: int,
          max_test: int | None, seed_offset: int = 0) -> dict[tuple[str, int], dict[str, float]]:
    results: dict[tuple[str, int], dict[str, float]] = {}
    for n in ns:
        for name in ["mean", "macs", *names]:
            runs = []
            for s in range(seed_offset, seed_offset + seeds):
                if name in ("mean", "macs"):
                    runs.append(run_one(data, None, n, s, max_test, baseline=name))
                    continue
                reg, kw = CONFIGS[name]
                make = functools.partial(create_predictor, reg, space=data.space, seed=s, **kw)
                runs.append(run_one(data, make, n, s, max_test))
            results[(name, n)] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
            r = results[(name, n)]
            print(f"{data.name:6s} n={n:4d} {name:14s} tau {r['tau']:.4f} rho {r['rho']:.4f} rmse {r['rmse']:.4f} "
                  f"top10 {r['top10']:.3f} fit {r['fit_s']:6.2f}s (cpu {r['fit_cpu_s']:6.2f}s) "
                  f"pred {r['pred_s']:5.2f}s (cpu {r['pred_cpu_s']:5.2f}s) load {os.getloadavg()[0]:.2f}", flush=True)
    return results


def table(title: str, results: dict[tuple[str, int], dict[str, float]], ns: Sequence[int]) -> None:
    names = list(dict.fromkeys(k[0] for k in results))
    print(f"\n## {title}: Kendall tau / top-10% precision (mean over draws)")
    print(f"{'predictor':14s} " + " ".join(f"{'n=' + str(n):>13s}" for n in ns) + "   fit_s@max  pred_s@max  rmse@max")
    for name in names:
        cells = " ".join(f"{results[(name, n)]['tau']:.3f}/{results[(name, n)]['top10']:.2f}".rjust(13) for n in ns)
        last = results[(name, ns[-1])]
        print(f"{name:14s} {cells}   {last['fit_s']:9.2f}  {last['pred_s']:10.2f}  {last['rmse']:8.4f}")


def full_table(title: str, results: dict[tuple[str, int], dict[str, float]]) -> None:
    """Every metric of every predictor at every n_train (means over draws), as a markdown table."""
    print(f"\n## {title}: all metrics (mean over draws; wall and process-CPU seconds, one thread)")
    print("| n | predictor | tau | rho | RMSE | top10 | fit s | fit cpu s | predict s | predict cpu s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (name, n), r in sorted(results.items(), key=lambda kv: kv[0][1]):
        print(f"| {n} | {name} | {r['tau']:.4f} | {r['rho']:.4f} | {r['rmse']:.4f} | {r['top10']:.3f} | "
              f"{r['fit_s']:.2f} | {r['fit_cpu_s']:.2f} | {r['pred_s']:.2f} | {r['pred_cpu_s']:.2f} |")


def best(results: dict[tuple[str, int], dict[str, float]], n: int, key: str) -> tuple[str, float]:
    cands = [(name, r[key]) for (name, m), r in results.items() if m == n and name not in ("mean", "macs")]
    return max(cands, key=lambda c: c[1]) if cands else ("-", float("nan"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 draw, n_train 100 and 500, 3000 NB201 test cells")
    ap.add_argument("--predictors", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--seed-offset", type=int, default=0,
                    help="first draw seed (reported figures use 0; choose settings on other draws, e.g. 100)")
    ap.add_argument("--datasets", nargs="+", default=["ofa", "nb201"], choices=["ofa", "nb201"])
    ap.add_argument("--ns", type=int, nargs="+", default=None, help="n_train values (default 50 100 250 500)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription)")
    args = ap.parse_args(argv)
    if not YARDSTICKS.is_dir():
        sys.exit(f"reference data not found at {YARDSTICKS.resolve()}")
    torch.set_num_threads(args.threads)
    ns = tuple(args.ns) if args.ns else (100, 500) if args.quick else (50, 100, 250, 500)
    seeds = args.seeds or (1 if args.quick else 5)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs); "
          f"draw seeds {args.seed_offset}..{args.seed_offset + seeds - 1}")
    empty: dict[tuple[str, int], dict[str, float]] = {}
    ofa = bench(load_ofa(), args.predictors, ns, seeds, None, args.seed_offset) if "ofa" in args.datasets else empty
    nb = (bench(load_nb201(), args.predictors, ns, seeds, 3000 if args.quick else None, args.seed_offset)
          if "nb201" in args.datasets else empty)
    for title, res in (("OFA-MBv3 ImageNet (dev.csv, 1,051 distinct subnets)", ofa),
                       ("NAS-Bench-201 CIFAR-10 (15,625 cells)", nb)):
        if res:
            table(title, res, ns)
    for title, res in (("OFA-MBv3 ImageNet", ofa), ("NAS-Bench-201 CIFAR-10", nb)):
        if res:
            full_table(title, res)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    name500, tau500 = best(ofa, 500, "tau")
    fit500 = ofa.get((name500, 500), {})
    print(f"RESULT tau_ofa_n100={best(ofa, 100, 'tau')[1]:.4f} top10_ofa_n100={best(ofa, 100, 'top10')[1]:.3f} "
          f"tau_ofa_n500={tau500:.4f} fit_s_n500={fit500.get('fit_s', float('nan')):.2f} "
          f"fit_cpu_s_n500={fit500.get('fit_cpu_s', float('nan')):.2f} "
          f"tau_nb201_n100={best(nb, 100, 'tau')[1]:.4f} best_ofa_n100={best(ofa, 100, 'tau')[0]} "
          f"best_ofa_n500={name500}")

if __name__ == "__main__":
    main()
