"""Wall time of a predictor-driven search on OFA-MobileNetV3 under a latency constraint (population 100 x 500).

Once-for-All's ``EvolutionFinder`` (Cai et al., ICLR 2020) evolves 100 architectures for 500 generations, calling its
efficiency model and accuracy predictor one architecture at a time; here whole populations are priced at once:
encodings -> depth-masked one-hot features -> one predictor call, and encodings -> one latency-table gather
(``hw_profiles`` snapdragon855 model, ``CostModel.evaluate_encoded``), inside :func:`nas.search.run_search`.

Accuracy predictor: a stand-in with the predictors' contract (``fit(archs, y)``, ``predict(archs)``, plus
``predict_encoded(X)``) on one-hot features, fitted on the measured ImageNet top-1 of OFA-MBv3 subnets in
../shared/yardsticks/ofa_mbv3_imagenet/dev.csv: ridge regression (RESULT line), and OFA's MLP (3 x 400, ReLU), whose
float64 forward pass over 100 archs costs milliseconds by itself, as a second set of rows. Those subnets are all at
resolution 224, so the search space is OFA-MBv3 at r=224 (the predictor knows nothing of other resolutions).
Both run their fitted weights in plain numpy on whole populations (``predict_encoded``).

Rows: our vectorised OFA-style evolution, single objective (max predicted top-1 s.t. latency <= 25 ms, as OFA) and
two objectives (top-1, latency; NSGA-II ranking); pymoo NSGA-II through the same vectorised problem; and a faithful
one-architecture-at-a-time re-implementation of OFA's loop for reference (timed on ``--reference-gens`` generations
and extrapolated to 500). front_hv: hypervolume of the feasible (latency, top-1) front of everything a search
evaluated, reference point (25 ms, 70% top-1), in ms x points.

    python bench/search_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.neural_network import MLPRegressor
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.search import Constraint, hw_objective, hypervolume, pareto_front, predictor_objective, run_search  # noqa: E402
from nas.search.encoded import EncodedView  # noqa: E402
from search_spaces import create_space  # noqa: E402
from search_spaces.ofa_mbv3 import MBv3Arch, OFAMobileNetV3Space  # noqa: E402

DEV = ROOT.parent / "shared" / "yardsticks" / "ofa_mbv3_imagenet" / "dev.csv"
LATENCY_MS = 25.0
REF = np.array([LATENCY_MS, -70.0])  # (latency ms, -top-1 %)


MODELS = {
    "ridge": lambda seed: Ridge(alpha=1.0),
    "mlp": lambda seed: MLPRegressor(hidden_layer_sizes=(400, 400, 400), learning_rate_init=1e-3, max_iter=400,
                                     early_stopping=True, random_state=seed),
}


class OnehotPredictor:
    """Stand-in accuracy predictor on depth-masked one-hot features: ridge regression, or OFA's 3 x 400 MLP."""

    def __init__(self, space: OFAMobileNetV3Space, kind: str = "ridge", seed: int = 0) -> None:
        self.space, self.view, self.kind = space, EncodedView(space), kind
        self.model = MODELS[kind](seed)

    def fit(self, archs: Sequence[MBv3Arch], y: np.ndarray) -> OnehotPredictor:
        self.mean = float(np.mean(y))
        self.model.fit(self.space.onehot_many(list(archs)), np.asarray(y) - self.mean)
        if self.kind == "ridge":
            self.coef = self.model.coef_.astype(np.float32)
            self.bias = np.float32(self.model.intercept_ + self.mean)
        else:
            self.layers = [(w.astype(np.float32), b.astype(np.float32))
                           for w, b in zip(self.model.coefs_, self.model.intercepts_)]
        return self

    def predict(self, archs: Sequence[MBv3Arch]) -> np.ndarray:
        return self.model.predict(self.space.onehot_many(list(archs))) + self.mean

    def predict_encoded(self, X: np.ndarray) -> np.ndarray:
        """The fitted model's forward pass in plain numpy (float32), skipping sklearn's per-call input checks."""
        if self.kind == "ridge":  # a linear model of one-hots is a sum of one weight per active gene: a gather
            X = np.asarray(X, dtype=np.int64)
            return (self.coef[X + self.view.offsets] * self.view.active(X)).sum(axis=1) + self.bias
        h = self.view.onehot(X)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0] + self.mean


def front_hv(lat: np.ndarray, acc: np.ndarray) -> float:
    F = np.stack([lat, -acc], axis=1)
    ok = lat <= LATENCY_MS
    return hypervolume(F[ok][pareto_front(F[ok])], REF) if ok.any() else 0.0


def ofa_style_reference(space: OFAMobileNetV3Space, predictor: OnehotPredictor, latency: Any, generations: int,
                        seed: int) -> tuple[float, float, float, float]:
    """OFA's EvolutionFinder loop with one-at-a-time model calls; returns (seconds, cpu, best top-1, front_hv)."""
    rng = np.random.default_rng(seed)
    seen_lat, seen_acc = [], []

    def feasible_sample(make: Any) -> tuple[MBv3Arch, float]:
        while True:
            arch = make()
            lat = float(latency([arch])[0])
            if lat <= LATENCY_MS:
                return arch, lat

    def scored(arch: MBv3Arch, lat: float) -> tuple[float, MBv3Arch]:
        acc = float(predictor.predict([arch])[0])
        seen_lat.append(lat)
        seen_acc.append(acc)
        return acc, arch

    t0, c0 = time.perf_counter(), time.process_time()
    population = [scored(*feasible_sample(lambda: space.sample(rng))) for _ in range(100)]
    for _ in range(generations):
        parents = sorted(population, key=lambda p: -p[0])[:25]
        population = list(parents)
        for _ in range(50):
            par = parents[rng.integers(25)][1]
            population.append(scored(*feasible_sample(lambda p=par: space.mutate(p, rng, 0.1))))
        for _ in range(50):
            a, b = parents[rng.integers(25)][1], parents[rng.integers(25)][1]
            population.append(scored(*feasible_sample(lambda a=a, b=b: space.crossover(a, b, rng))))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return seconds, cpu, max(p[0] for p in population), front_hv(np.array(seen_lat), np.array(seen_acc))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reference loop timed on 10 generations; no pymoo row")
    ap.add_argument("--generations", type=int, default=500)
    ap.add_argument("--reference-gens", type=int, default=None, help="generations of the one-at-a-time reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--predictors", nargs="+", default=["ridge", "mlp"], choices=list(MODELS))
    args = ap.parse_args()
    if not DEV.exists():
        sys.exit(f"measured OFA-MBv3 accuracies not found at {DEV} (expected ../shared/yardsticks)")
    space = create_space("ofa_mbv3", resolutions=(224,))
    dev = pd.read_csv(DEV)
    archs = [space.validate(MBv3Arch.from_dict(ast.literal_eval(s))) for s in dev["Sub-network"]]
    lat = hw_objective(space, profile="snapdragon855")
    cons = [Constraint.on(lat, upper=LATENCY_MS)]
    lat.fn_x(EncodedView(space).sample(2, np.random.default_rng(0)))  # build the latency tables once, untimed
    rows = []
    limits = threadpool_limits(1)  # one thread, as OFA's reference run; small matrices gain nothing from more
    for kind in args.predictors:
        t0 = time.perf_counter()
        predictor = OnehotPredictor(space, kind, seed=args.seed).fit(archs, dev["Top-1 Acc (%)"].to_numpy())
        print(f"stand-in predictor {kind} on {len(archs)} measured subnets, fitted in {time.perf_counter() - t0:.1f}s")
        rows += run_all(space, predictor, lat, cons, args)
    print(f"\nOFA-MBv3 r=224, population 100 x {args.generations} generations, "
          f"latency@snapdragon855 <= {LATENCY_MS} ms")
    print(f"{'search':66s} {'wall s':>8s} {'CPU s':>8s} {'best top-1':>11s} {'front_hv':>9s} {'distinct':>9s}")
    for label, seconds, cpu, best, hv, n in rows:
        print(f"{label:66s} {seconds:8.2f} {cpu:8.2f} {best:11.3f} {hv:9.2f} {n if n >= 0 else '':>9}")
    limits.restore_original_limits()
    print(f"machine load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    ours = rows[1]
    print(f"RESULT seconds={ours[1]:.3f} front_hv={ours[4]:.3f}")


def run_all(space: OFAMobileNetV3Space, predictor: OnehotPredictor, lat: Any, cons: list[Constraint],
            args: argparse.Namespace) -> list[tuple[str, float, float, float, float, int]]:
    acc = predictor_objective(space, predictor=predictor, name="top1")
    rows = []
    settings = [("evolution (ours), 1 objective", "evolution", [acc], {"population_size": 100}),
                ("evolution (ours), 2 objectives", "evolution", [acc, lat], {"population_size": 100}),
                ("pymoo NSGA-II, 2 objectives", "pymoo_nsga2", [acc, lat], {"pop_size": 100})]
    for label, name, objectives, kw in settings:
        if name == "pymoo_nsga2" and args.quick:
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_search(space, objectives, cons, name, budget=10**9, seed=args.seed, searcher_kwargs=kw,
                         max_steps=args.generations + 1)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        top1, latency = res.metric("top1"), res.metric(lat.name)
        rows.append((f"[{predictor.kind}] {label}", seconds, cpu, float(top1[res.feasible].max()),
                     front_hv(latency, top1), res.n))
    ref_gens = args.reference_gens or (10 if args.quick else args.generations)
    sec, cpu, best, hv = ofa_style_reference(space, predictor, lat, ref_gens, args.seed)
    scale = args.generations / ref_gens
    label = f"[{predictor.kind}] OFA-style one at a time ({ref_gens} gens, times x{scale:.0f})"
    rows.append((label, sec * scale, cpu * scale, best, hv, -1))
    return rows


if __name__ == "__main__":
    main()
