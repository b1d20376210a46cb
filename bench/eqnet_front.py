"""The searched mixed-precision front of the embedded quantised supernet against its uniform policies (issue 21).

On ``nas/embedded/quant_ofa_mbv3_fmnist`` (EQ-Net supernet over the Fashion-MNIST OFA-MBv3 space x per-layer W/A
bits 3..8), for each seed:

1. the README's search, ``python -m nas.search experiment=eqnet_fmnist seed=<seed>`` (predicted top-1 vs MACs,
   model size, average weight bits; the predictor is fitted on the embedded measured pairs), run as a subprocess;
2. the uniform W8A8, W6A6 and W4A4 policies (per-channel symmetric weights, asymmetric activations) on three
   architectures of the space (the largest, a mid-size one, the smallest), measured;
3. for each uniform point, the ``--top`` front points of at most its model size with the highest predicted top-1,
   measured; the point is *held* when one of them is at least as accurate as the uniform policy.

Top-1 is measured on a fixed ``--test-images`` subset of the Fashion-MNIST test set after BN recalibration on
``--calib-images`` training images drawn with the seed (the seed varies the search and the recalibration images;
the supernet is the one shipped). ``front_dominates`` holds when every uniform point is held on the seed means;
``held`` counts (seed, uniform point) pairs held within the seed. Ends with
``RESULT front_dominates=.. held=k/n w8a8=.. w6a6=.. w4a4=.. front_at_w8a8=.. ...`` (top-1 in %, means over
seeds and architectures; ``_hw`` the 95 % t half-width over seeds of the paired front - uniform difference).

    python bench/eqnet_front.py --seeds 0,1,2       # ~6 min on the shared 2-core machine
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.eqnet import interval  # noqa: E402
from nas.checkpoints import load_supernet  # noqa: E402
from nas.data import create_data  # noqa: E402
from nas.evaluation import EvalSet, evaluate_subnets  # noqa: E402
from search_spaces.quant_costs import model_size_bytes  # noqa: E402

EMBEDDED = ROOT / "nas" / "embedded" / "quant_ofa_mbv3_fmnist"
MID = "r28-k5e3.k5e3-k5e3.k5e3-k5e3.k5e3-k5e3.k5e3-k5e3.k5e3"  # every choice mid-range
MODES = dict(w_granularity="per_channel", w_symmetric=True, a_symmetric=False)
UNIFORM = (8, 6, 4)


def search_front(seed: int, out: Path, budget: int) -> list[dict[str, str]]:
    cmd = [sys.executable, "-m", "nas.search", "experiment=eqnet_fmnist", f"seed={seed}", f"budget={budget}",
           f"results_root={out}", "progress=false", f"hydra.run.dir={out / 'hydra'}"]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"search failed: {proc.stderr[-2000:]}")
    with open((out / "latest").resolve() / "front.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=int, default=1500, help="architectures evaluated by each search (README: 1500)")
    ap.add_argument("--top", type=int, default=3, help="front points measured per uniform point")
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--calib-images", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    seeds = [int(s) for s in a.seeds.split(",")]
    net = load_supernet(EMBEDDED)
    space = net.space
    base = space.base
    archs = {"max": base.max_arch(), "mid": base.from_id(MID), "min": base.min_arch()}
    points = {f"{n}_w{b}a{b}": space.policy_for(arch, b, b, **MODES) for n, arch in archs.items() for b in UNIFORM}
    sizes = {k: model_size_bytes(space, p) / 1e3 for k, p in points.items()}
    data = create_data("fashion_mnist")
    uni: dict[str, list[float]] = {k: [] for k in points}
    front_best: dict[str, list[float]] = {k: [] for k in points}
    held = 0
    errs: list[float] = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            rows = search_front(seed, Path(tmp) / f"s{seed}", a.budget)
            evalset = EvalSet(data, split="test", n_images=a.test_images, calib_images=a.calib_images,
                              calib_batch=min(250, a.calib_images), seed=seed)
            measured = {r["arch_id"]: r["top1"] for r in evaluate_subnets(net, list(points.values()), evalset)}
            cands: dict[str, list] = {}
            pred: dict[str, list[float]] = {}
            for k in points:
                fit = [r for r in rows if float(r["size_kB"]) <= sizes[k] + 1e-9]
                fit.sort(key=lambda r: -float(r["top1"]))
                cands[k] = [space.from_json(r["arch"]) for r in fit[: a.top]]
                pred[k] = [float(r["top1"]) for r in fit[: a.top]]
            todo = {str(j.id): j for js in cands.values() for j in js if str(j.id) not in measured}
            measured |= {r["arch_id"]: r["top1"] for r in evaluate_subnets(net, list(todo.values()), evalset)}
            for k, p in points.items():
                u = measured[str(p.id)]
                got = [measured[str(j.id)] for j in cands[k]]
                best = max(got, default=float("nan"))
                errs.extend(np.subtract(pred[k], got).tolist())
                uni[k].append(u)
                front_best[k].append(best)
                held += int(best >= u - 1e-9)  # accuracies are multiples of 0.1 on 1000 images: ties hold
                print(f"seed {seed} {k:<10} size {sizes[k]:6.1f} kB  uniform {u:6.2f}  front (<= size, best of "
                      f"{len(cands[k])}) {best:6.2f}  (predicted {', '.join(f'{x:.2f}' for x in pred[k])}; measured "
                      f"{', '.join(f'{x:.2f}' for x in got)})", flush=True)
    print(f"\n{len(seeds)} seeds, {time.time() - t0:.0f} s; top-1 (%) on {a.test_images} test images, 95% t over seeds")
    print("| uniform point | size (kB) | uniform top-1 | front top-1 (<= size) | front - uniform |")
    print("|---|---|---|---|---|")
    holds = []
    for k in points:
        u, f = interval(uni[k]), interval(front_best[k])
        d = interval([x - y for x, y in zip(front_best[k], uni[k])])
        holds.append(f[0] >= u[0] - 1e-9)
        print(f"| {k} | {sizes[k]:.1f} | {u[0]:.2f} +- {u[1]:.2f} | {f[0]:.2f} +- {f[1]:.2f} | "
              f"{d[0]:+.2f} +- {d[1]:.2f} |")
    print(f"front points: predicted - measured top-1 {np.mean(errs):+.2f} points on average ({len(errs)} measured)")
    res = [f"front_dominates={str(all(holds)).lower()}", f"held={held}/{len(points) * len(seeds)}"]
    for b in UNIFORM:
        ks = [k for k in points if k.endswith(f"w{b}a{b}")]
        diffs = [np.mean([front_best[k][i] - uni[k][i] for k in ks]) for i in range(len(seeds))]
        res += [f"w{b}a{b}={np.mean([np.mean(uni[k]) for k in ks]):.2f}",
                f"front_at_w{b}a{b}={np.mean([np.mean(front_best[k]) for k in ks]):.2f}",
                f"gain_w{b}a{b}_hw={interval(diffs)[1]:.2f}"]
    res.append(f"front_pred_bias={np.mean(errs):.2f}")
    print("RESULT " + " ".join(res))


if __name__ == "__main__":
    main()
