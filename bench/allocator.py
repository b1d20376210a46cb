"""What :func:`nas.runtime.retain_freed_memory` buys on this machine: glibc's default malloc vs freed memory kept.

The setting is process-wide and cannot be undone, so each measurement runs in a fresh child process; children of
the two modes alternate (default, retained, default, ...) so that drift in machine speed hits both alike.
Workloads on the OFA-MobileNetV3 smallest and largest subnets (exported static modules, 2 threads):
(a) evaluation: a batch-200 forward at 160 px (what BN recalibration and accuracy measurement run);
(b) training: a batch-16 step (forward + backward + SGD) at 160 px.
Reports median seconds, minor page faults per call and peak RSS per mode, and the speed-up default / retained.
Ends with ``RESULT eval_min_speedup=.. eval_max_speedup=.. train_min_speedup=.. train_max_speedup=..``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, statistics, sys, time
from nas.runtime import retain_freed_memory
mode, workload, which, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
active = retain_freed_memory() if mode == "retained" else False
import torch
from search_spaces import MBv3Arch, create_space
from supernets import create_supernet
torch.set_num_threads(2)
torch.manual_seed(0)
space = create_space("ofa_mbv3")
a = space.min_arch() if which == "min" else space.max_arch()
a = MBv3Arch(ks=a.ks, e=a.e, d=a.d, r=160)
model = create_supernet("ofa_mbv3", space).export(a).module
if workload == "eval":
    model.eval()
    x = torch.randn(200, 3, 160, 160)
    def call():
        with torch.inference_mode():
            model(x)
else:
    model.train()
    x, y = torch.randn(16, 3, 160, 160), torch.randint(0, 1000, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    def call():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
call()
times, faults = [], []
for _ in range(repeats):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({"active": active, "s": statistics.median(times), "faults": statistics.median(faults),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(mode: str, workload: str, which: str, repeats: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, workload, which, str(repeats)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3, help="child processes per mode and workload")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per child")
    args = ap.parse_args()
    results: dict[str, float] = {}
    print(f"{'workload':14s} {'mode':9s} {'s/call':>8s} {'faults/call':>12s} {'peak RSS MB':>12s}")
    for workload in ("eval", "train"):
        for which in ("min", "max"):
            runs: dict[str, list[dict]] = {"default": [], "retained": []}
            for _ in range(args.rounds):
                for mode in runs:
                    runs[mode].append(child(mode, workload, which, args.repeats))
            if not all(r["active"] for r in runs["retained"]):
                print("retain_freed_memory() is not available here (not Linux/glibc)")
            med = {m: statistics.median(r["s"] for r in rs) for m, rs in runs.items()}
            for m, rs in runs.items():
                print(f"{workload + '_' + which:14s} {m:9s} {med[m]:8.3f} "
                      f"{statistics.median(r['faults'] for r in rs):12.0f} {max(r['rss_mb'] for r in rs):12.0f}")
            results[f"{workload}_{which}_speedup"] = med["default"] / med["retained"]
    print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
