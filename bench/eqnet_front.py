"""The searched mixed-precision front of the embedded quantised supernet against its uniform policies (issue 21).

On ``nas/embedded/quant_ofa_mbv3_fmnist`` (EQ-Net supernet over the Fashion-MNIST OFA-MBv3 space x per-layer W/A
bits 3..8), for each seed:

1. the README's search, ``python -m nas.search experiment=eqnet_fmnist seed=<seed>`` (predicted top-1 vs MACs,
   model size, average weight bits; the predictor is fitted on the embedded measured pairs), run as a subprocess;
2. the uniform W8A8, W6A6 and W4A4 policies (per-channel symmetric weights, asymmetric activations) on three
   architectures of the space (the largest, a mid-size one, the smallest), measured;
3. for each uniform point, the ``--top`` front points of at most its model size with the highest predicted top-1,
   measured; the point is *held* when one of them is at least as accurate as the uniform policy;
4. with ``--verify K`` (default 60) the search also runs ``verify.top=K`` (:mod:`nas.search.verify`: K front points
   spread over the front plus the space's anchors measured on the validation split, the front re-derived on the
   measured top-1); for each uniform point the verified-front point of at most its size with the best
   *validation* top-1 is then measured on the test images. The held counts and ``front_dominates`` use this
   verified pick; the predicted pick of step 3 is reported beside it (``front_dominates_predicted``).

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
from search_spaces.quant import JointSpace  # noqa: E402
from search_spaces.quant_costs import model_size_bytes  # noqa: E402

EMBEDDED = ROOT / "nas" / "embedded" / "quant_ofa_mbv3_fmnist"
MID = "r28-k5e3.k5e3-k5e3.k5e3-k5e3.k5e3-k5e3.k5e3-k5e3.k5e3"  # every choice mid-range
MODES = JointSpace.DEPLOY_MODES  # the uniform policies as deployed: per-channel symmetric weights, asym. acts
UNIFORM = (8, 6, 4)


def search_front(seed: int, out: Path, budget: int, verify: int,
                 verify_images: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(the search's front rows, its verified rows on the verified front; empty without ``verify``)."""
    cmd = [sys.executable, "-m", "nas.search", "experiment=eqnet_fmnist", f"seed={seed}", f"budget={budget}",
           f"results_root={out}", "progress=false", f"hydra.run.dir={out / 'hydra'}", f"verify.top={verify}",
           f"verify.n_images={verify_images}"]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"search failed: {proc.stderr[-2000:]}")
    run = (out / "latest").resolve()
    with open(run / "front.csv", newline="") as fh:
        front = list(csv.DictReader(fh))
    if not verify:
        return front, []
    with open(run / "verified.csv", newline="") as fh:
        return front, [r for r in csv.DictReader(fh) if r["on_verified_front"] == "True"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=int, default=1500, help="architectures evaluated by each search (README: 1500)")
    ap.add_argument("--top", type=int, default=3, help="front points measured per uniform point (predicted pick)")
    ap.add_argument("--verify", type=int, default=60, help="verify.top of each search (0: predicted pick only)")
    ap.add_argument("--verify-images", default="2000", help="verify.n_images (null: the whole validation split)")
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
    picks = ("predicted", "verified") if a.verify else ("predicted",)
    best: dict[str, dict[str, list[float]]] = {m: {k: [] for k in points} for m in picks}
    held = {m: 0 for m in picks}
    anchor_picks = 0
    errs: list[float] = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            rows, vrows = search_front(seed, Path(tmp) / f"s{seed}", a.budget, a.verify, a.verify_images)
            evalset = EvalSet(data, split="test", n_images=a.test_images, calib_images=a.calib_images,
                              calib_batch=min(250, a.calib_images), seed=seed)
            measured = {r["arch_id"]: r["top1"] for r in evaluate_subnets(net, list(points.values()), evalset)}
            cands: dict[str, dict[str, list]] = {m: {} for m in picks}
            pred: dict[str, list[float]] = {}
            for k in points:
                fit = [r for r in rows if float(r["size_kB"]) <= sizes[k] + 1e-9]
                fit.sort(key=lambda r: -float(r["top1"]))
                cands["predicted"][k] = [space.from_json(r["arch"]) for r in fit[: a.top]]
                pred[k] = [float(r["top1"]) for r in fit[: a.top]]
                if a.verify:  # the verified front's best validation top-1 at this size
                    vfit = [r for r in vrows if float(r["size_kB"]) <= sizes[k] + 1e-9]
                    vfit.sort(key=lambda r: -float(r["measured_top1"]))
                    cands["verified"][k] = [space.from_json(r["arch"]) for r in vfit[:1]]
                    anchor_picks += int(bool(vfit) and vfit[0]["anchor"] == "True")
            todo = {str(j.id): j for c in cands.values() for js in c.values() for j in js if str(j.id) not in measured}
            measured |= {r["arch_id"]: r["top1"] for r in evaluate_subnets(net, list(todo.values()), evalset)}
            for k, p in points.items():
                u = measured[str(p.id)]
                uni[k].append(u)
                line = f"seed {seed} {k:<10} size {sizes[k]:6.1f} kB  uniform {u:6.2f}"
                for m in picks:
                    got = [measured[str(j.id)] for j in cands[m][k]]
                    b = max(got, default=float("nan"))
                    best[m][k].append(b)
                    held[m] += int(b >= u - 1e-9)  # accuracies are multiples of 0.05 on 2000 images: ties hold
                    line += f"  {m} pick {b:6.2f}"
                    if m == "predicted":
                        errs.extend(np.subtract(pred[k], got).tolist())
                        line += (f" (pred {', '.join(f'{x:.2f}' for x in pred[k])}; "
                                 f"test {', '.join(f'{x:.2f}' for x in got)})")
                print(line, flush=True)
    n = len(points) * len(seeds)
    print(f"\n{len(seeds)} seeds, {time.time() - t0:.0f} s; top-1 (%) on {a.test_images} test images, 95% t over seeds")
    head = "| uniform point | size (kB) | uniform top-1 |"
    head += "".join(f" {m} pick (<= size) | {m} - uniform |" for m in picks)
    print(head)
    print("|---" * (3 + 2 * len(picks)) + "|")
    holds: dict[str, list[bool]] = {m: [] for m in picks}
    for k in points:
        u = interval(uni[k])
        line = f"| {k} | {sizes[k]:.1f} | {u[0]:.2f} +- {u[1]:.2f} |"
        for m in picks:
            f, d = interval(best[m][k]), interval([x - y for x, y in zip(best[m][k], uni[k])])
            holds[m].append(f[0] >= u[0] - 1e-9)
            line += f" {f[0]:.2f} +- {f[1]:.2f} | {d[0]:+.2f} +- {d[1]:.2f} |"
        print(line)
    print(f"front points: predicted - measured top-1 {np.mean(errs):+.2f} points on average ({len(errs)} measured)")
    if a.verify:
        print(f"verified picks that are the space's uniform anchors themselves: {anchor_picks}/{n}")
    main_pick = "verified" if a.verify else "predicted"
    res = [f"front_dominates={str(all(holds[main_pick])).lower()}", f"held={held[main_pick]}/{n}",
           f"front_dominates_predicted={str(all(holds['predicted'])).lower()}",
           f"held_predicted={held['predicted']}/{n}"]
    for b in UNIFORM:
        ks = [k for k in points if k.endswith(f"w{b}a{b}")]
        diffs = [np.mean([best[main_pick][k][i] - uni[k][i] for k in ks]) for i in range(len(seeds))]
        res += [f"w{b}a{b}={np.mean([np.mean(uni[k]) for k in ks]):.2f}",
                f"front_at_w{b}a{b}={np.mean([np.mean(best[main_pick][k]) for k in ks]):.2f}",
                f"gain_w{b}a{b}_hw={interval(diffs)[1]:.2f}"]
    res += [f"front_pred_bias={np.mean(errs):.2f}",
            f"anchor_picks={anchor_picks}/{n}" if a.verify else "anchor_picks=nan"]
    print("RESULT " + " ".join(res))


if __name__ == "__main__":
    main()
