"""CQAP encoding vs our default predictor features on the embedded quantised supernet's measured pairs.

Data: ``nas/embedded/quant_ofa_mbv3_fmnist/measurements.csv`` (BN-recalibrated top-1 of (arch, policy) pairs of
the EQ-Net supernet over the Fashion-MNIST OFA-MBv3 space, drawn the CQAP way). For each of 3 seeds the pairs are
shuffled, the last ``--test`` held out, and predictors are fitted on the first 100 and the first 300 of the rest.
Kendall tau on the held-out pairs, mean and 95 % t-interval over the seeds.

Compared (the model matters as much as the features, so both crosses are reported):

- ``cqap``: EQ-Net's predictor, an MLP on the CQAP encoding (``features=cqap``: mode one-hots, one-hot weight and
  activation bits per free layer; the base architecture's one-hot first, since the architecture is searched too);
- ``ours``: the preset's predictor (``ridge_svr`` on ``features=auto``: log MACs/params, per-segment and per-slot
  costs, the joint space's one-hot genes);
- ``cqap_ridge`` (ridge_svr on cqap) and ``ours_mlp`` (mlp on auto): the encodings under the other model.

Run: ``python bench/eqnet_predictors.py`` (about a minute). Ends with
``RESULT cqap_tau=.. ours_tau=.. cqap_tau_100=.. ours_tau_100=..`` (n=300 unless suffixed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

# Run as a script, bench/ comes first on sys.path and bench/predictors.py would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from nas import embedded  # noqa: E402
from predictors import create_predictor, kendall_tau  # noqa: E402

VARIANTS = {"cqap": ("mlp", "cqap"), "ours": ("ridge_svr", "auto"), "cqap_ridge": ("ridge_svr", "cqap"),
            "ours_mlp": ("mlp", "auto")}


def interval(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--test", type=int, default=100, help="held-out pairs per split")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 300])
    args = ap.parse_args()
    start = time.perf_counter()
    net, rows = embedded.load(embedded.QUANT_DEFAULT)
    space = net.space
    archs, y = [r["arch"] for r in rows], np.array([r["top1"] for r in rows])
    if len(rows) < max(args.sizes) + args.test:
        raise SystemExit(f"{len(rows)} measured pairs; need {max(args.sizes)} train + {args.test} test")
    print(f"{len(rows)} measured pairs, top-1 {y.min():.2f}..{y.max():.2f} (mean {y.mean():.2f}); "
          f"{args.seeds} splits, {args.test} held out")
    taus: dict[tuple[str, int], list[float]] = {}
    for seed in range(args.seeds):
        order = np.random.default_rng(seed).permutation(len(rows))
        test = order[-args.test:]
        for n in args.sizes:
            train = order[:n]
            for key, (model, features) in VARIANTS.items():
                p = create_predictor(model, space=space, features=features, seed=seed)
                p.fit([archs[i] for i in train], y[train])
                tau = kendall_tau(y[test], p.predict([archs[i] for i in test]))
                taus.setdefault((key, n), []).append(tau)
    print(f"{'predictor':<12}" + "".join(f"{'tau n=' + str(n):>22}" for n in args.sizes))
    for key in VARIANTS:
        cells = [interval(taus[(key, n)]) for n in args.sizes]
        print(f"{key:<12}" + "".join(f"{m:>14.3f} +- {h:.3f}" for m, h in cells))
    big, small = max(args.sizes), min(args.sizes)
    ratio = interval(taus[("cqap", big)])[0] / interval(taus[("ours", big)])[0]
    print(f"cqap / ours tau at n={big}: {ratio:.3f} ({time.perf_counter() - start:.0f}s)")
    fields = {"cqap_tau": ("cqap", big), "ours_tau": ("ours", big), "cqap_tau_100": ("cqap", small),
              "ours_tau_100": ("ours", small), "cqap_ridge_tau": ("cqap_ridge", big),
              "ours_mlp_tau": ("ours_mlp", big)}
    print("RESULT " + " ".join(f"{k}={interval(taus[v])[0]:.3f}+-{interval(taus[v])[1]:.3f}"
                               for k, v in fields.items()))


if __name__ == "__main__":
    main()
