"""``nas.search`` composed from config groups, run as commands: registered and user objectives with constraints,
accuracy from a predictor fitted on a CSV, a user's searcher by ``module:factory``, and the errors for bad names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MEASUREMENTS = REPO / "nas" / "embedded" / "ofa_mbv3_fmnist" / "measurements.csv"
USER_MODULE = '''
import numpy as np
from nas.search.objectives import Objective
from nas.search.searchers import RandomSearch


def depth(space):
    return Objective("depth", lambda archs: np.array([sum(a.d) for a in archs], dtype=float), "min")


def my_searcher(**kwargs):
    return RandomSearch(**kwargs)


def not_an_objective(space):
    return "depth"
'''


def search(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(cwd), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "nas.search", "progress=false", "out_dir=r", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture()
def user_dir(tmp_path) -> Path:
    (tmp_path / "my_obj.py").write_text(USER_MODULE)
    return tmp_path


def test_registered_objective_with_a_constraint_on_another(user_dir):
    proc = search("budget=300", "+objectives.size.name=params", "constraints=['macs<=1.5']", cwd=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((user_dir / "r" / "result.json").read_text())
    assert [o["name"] for o in result["objectives"]] == ["top1", "macs_M", "params_M"]
    assert result["front"] and all(p["macs_M"] <= 1.5 for p in result["front"])


def test_user_objective_and_searcher_and_csv_predictor(user_dir):
    proc = search("budget=200", "accuracy=predictor", f"accuracy.measurements={MEASUREMENTS}", "predictor=gp",
                  "+objectives.depth.name=my_obj:depth", "searcher=custom",
                  "searcher.name=my_obj:my_searcher", "+searcher.kwargs.batch_size=8", cwd=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((user_dir / "r" / "result.json").read_text())
    assert [o["name"] for o in result["objectives"]] == ["top1", "macs_M", "depth"]
    assert all(p["depth"] == sum(p["arch"]["d"]) for p in result["evaluated"])
    assert "gp predictor fitted on 302 measured subnets" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["objectives.cost.name=no_such_objective"], "allowed: accuracy, cost, hw, a registered objective"),
    (["+objectives.x.name=my_obj:not_an_objective"], "returned a str, not a Objective"),
    (["+objectives.x.name=my_obj:nope"], "has no attribute 'nope'"),
    (["constraints=['volume<=3']"], "constraint on 'volume'"),
    (["searcher=custom", "searcher.name=nosuch_mod:searcher"], "cannot import module 'nosuch_mod'"),
])
def test_bad_names_are_refused_before_anything_is_written(user_dir, args, message):
    proc = search("budget=50", *args, cwd=user_dir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (user_dir / "r").exists()
