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


def test_a_space_without_accuracy_lists_the_commands_that_measure_it(tmp_path):
    """``nas.search search_space=nb201 +hw=local_cpu``: the error lists train, evaluate, profile and search commands,
    and each one composes into a config whose space takes the default data (checked without running them)."""
    import shlex

    from hydra import compose, initialize_config_dir

    from nas.conf import CONF_DIR
    from nas.data import check_compatible, create_data
    from nas.resolve import resolve_space
    from nas.search.compose import ComposeError, accuracy_source

    proc = search("search_space=nb201", "+hw=local_cpu", f"hydra.run.dir={tmp_path}/h", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip().startswith("python -m ")]
    assert [ln.split()[2] for ln in lines] == ["nas.train", "nas.evaluate", "nas.profile", "nas.search"]
    assert not (tmp_path / "r").exists()
    data = create_data("fashion_mnist")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        for line in lines:
            command, args = line.split()[2], shlex.split(line)[3:]
            cfg = compose(config_name=command.split(".")[1], overrides=args)
            if command in ("nas.train", "nas.search"):
                space = resolve_space(cfg.search_space)
                assert space.name == "nb201"
                check_compatible(space, data)  # raises if the command would not run on the default data
            if command == "nas.profile":
                assert resolve_space(cfg.space).input_shape(space.min_arch()) == (1, 28, 28)
            if command == "nas.search":
                assert cfg.accuracy.source == "predictor" and cfg.accuracy.measurements.endswith("measurements.csv")
        cfg = compose(config_name="search", overrides=["search_space=nb201", "+hw=local_cpu"])
    with pytest.raises(ComposeError, match="nas.train search_space=nb201"):
        accuracy_source(cfg)
