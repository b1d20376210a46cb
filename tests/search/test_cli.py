"""The search CLI end to end: a user's space from a directory outside the repo, searched by config alone."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "custom_space" / "my_space.py"


def _run(args: list[str], cwd: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = f"{extra_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run([sys.executable, "-m", "nas.search", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_custom_space_from_a_user_directory_is_searched_by_config(tmp_path):
    user = tmp_path / "user_code"
    user.mkdir()
    shutil.copy(EXAMPLE, user / "my_space.py")
    sys.path.insert(0, str(user))
    try:
        import my_space  # the user's module, outside the engine's packages
    finally:
        sys.path.remove(str(user))
    space = my_space.make_space()
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(60):
        a = space.sample(rng)
        rows.append({"arch_id": a.id, "arch": space.to_json(a), "top1": 60 + 5 * np.log(space.macs(a)) / 10,
                     "loss": 0.5, "macs": space.macs(a), "params": space.params(a)})
    meas = tmp_path / "measurements.csv"
    with open(meas, "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "results"
    proc = _run(["experiment=custom", "search_space=custom", "search_space.name=my_space:make_space",
                 f"experiment.kwargs.measurements={meas}",
                 "experiment.kwargs.predictor=ridge_svr", f"out_dir={out}", "budget=200", "progress=false",
                 "searcher=pymoo_nsga2", "searcher.kwargs.pop_size=20"], cwd=tmp_path, extra_path=user)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "arch id" in proc.stdout and "macs_M" in proc.stdout
    front = json.loads((out / "front_ranked.json").read_text())
    assert front, "empty front"
    macs = [r["macs_M"] for r in front]
    top1 = [r["top1"] for r in front]
    # ranked by accuracy, the front trades accuracy for MACs: more accurate points cost at least as many MACs
    assert all(a >= b for a, b in zip(top1, top1[1:])) and all(a >= b - 1e-9 for a, b in zip(macs, macs[1:]))
    for name in ("front.csv", "result.json", "pareto.png", "config.yaml", "EXPORT.md"):
        assert (out / name).is_file(), name


def test_unknown_hw_profile_lists_the_available_ones(tmp_path):
    proc = _run(["+hw=snapdragon_855", f"out_dir={tmp_path / 'r'}", "budget=10"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "snapdragon855" in proc.stderr


def test_constraint_on_a_metric_the_search_lacks_is_refused(tmp_path):
    proc = _run(["experiment=ofa_imagenet", "constraints=['latency_ms<=3']", f"out_dir={tmp_path / 'r'}", "budget=10"],
                cwd=tmp_path)
    assert proc.returncode != 0
    assert "latency_ms" in proc.stderr and "+hw" in proc.stderr


@pytest.mark.parametrize("hw", [None, "snapdragon855"])
def test_default_search_runs_on_the_embedded_default(tmp_path, hw):
    args = [f"out_dir={tmp_path / 'r'}", "budget=400", "progress=false"] + (
        [f"+hw={hw}", "export=0", "constraints=['latency_ms<=0.3']"] if hw else [])
    proc = _run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    front = json.loads((tmp_path / "r" / "front_ranked.json").read_text())
    assert len(front) >= 3
    cost = "latency_ms" if hw else "macs_M"
    assert cost in front[0], front[0]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("rank"))
    assert "top1" in header and "macs_M" in header and (hw is None or "latency_ms" in header)
    if hw:  # the exported best point: its measured Fashion-MNIST test top-1 next to the predicted one
        assert max(p["latency_ms"] for p in front) <= 0.3
        line = proc.stdout.strip().splitlines()[-1]
        assert line.startswith("exported rank 0") and "predicted top-1" in line and "measured test top-1" in line
        meta = json.loads((tmp_path / "r" / "subnet_rank0" / "metadata.json").read_text())
        assert 70.0 < meta["measured_test_top1"] <= 100.0
