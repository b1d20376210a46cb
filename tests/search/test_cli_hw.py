"""``python -m nas.search search_space=<nb201|vit_tiny> +hw=local_cpu`` from the command line: the space's own
latency table is measured on first use (every layer it can produce), then the search prices with it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hw_profiles import HardwareProfile, LatencyModel
from search_spaces import create_space

REPO = Path(__file__).resolve().parents[2]


def _measurements(space, path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for a in {space.sample(rng) for _ in range(40)}:
        rows.append({"arch_id": space.arch_id(a), "arch": space.to_json(a), "top1": 50 + 3 * np.log(space.macs(a)),
                     "loss": 0.5, "macs": space.macs(a), "params": space.params(a)})
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("name", ["nb201", pytest.param("vit_tiny", marks=pytest.mark.slow)])
def test_search_with_local_cpu_builds_the_space_profile_on_first_use(tmp_path: Path, name: str) -> None:
    space = create_space(name)
    meas = _measurements(space, tmp_path / "m.csv")
    out = tmp_path / "r"
    args = [f"search_space={name}", "experiment=custom", f"experiment.kwargs.measurements={meas}", "+hw=local_cpu",
            f"hw.kwargs.path='{tmp_path}/profiles/cpu_{{space}}.json'", "hw.build.warmup=1", "hw.build.repeats=3",
            "hw.build.passes=1", "hw.build.clock=wall", "hw.build.calibration_processes=1",
            f"out_dir={out}", "budget=60", "progress=false", "searcher.kwargs.pop_size=12"]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "nas.search", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    profile_file = tmp_path / "profiles" / f"cpu_{name}.json"
    profile = HardwareProfile.load(profile_file)
    assert profile.meta.space == name
    assert set(profile.entries) == {s.key() for s in space.layer_table().specs()}  # every layer, measured
    assert profile.meta.calibration is not None  # network-level calibration is part of every local profile
    assert "architectures priced from measured entries" in proc.stdout  # the summary says no layer was extrapolated
    front = json.loads((out / "front_ranked.json").read_text())
    assert front and all(p["latency_ms"] > 0 for p in front)
    model = LatencyModel.from_profile(profile)
    archs = [space.from_dict(p["arch"]) for p in front]
    np.testing.assert_allclose([p["latency_ms"] for p in front], model(space, archs), rtol=1e-9)
