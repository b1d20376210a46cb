"""A search killed mid-way and resumed ends exactly where an uninterrupted one does (same seed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.search import Objective, params_objective, run_search
from nas.search.loop import CHECKPOINT, CheckpointMismatchError

from .conftest import CountingObjective, proxy_accuracy


class Crash(RuntimeError):
    pass


def _objectives(nb201, fn):
    return [Objective("acc", fn, direction="max", expensive=True), params_objective(nb201)]


CASES = [
    ("pymoo_nsga2", {"pop_size": 8}, 36),
    ("pymoo_ga", {"pop_size": 8}, 36),
    ("regularized_evolution", {"population_size": 8, "sample_size": 3}, 36),
    ("bayesian_linear", {}, 36),
    ("evolution", {"population_size": 8}, 36),
    ("optuna_tpe", {"storage": "JOURNAL"}, 14),
    ("optuna_nsga2", {"sampler_kwargs": {"population_size": 4}, "storage": "JOURNAL"}, 16),
    # the default storage, SQLite in the run directory, costs a few fsynced commits per trial: slow on some disks
    pytest.param("optuna_tpe", {}, 20, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,kwargs,budget", CASES)
def test_resume_after_crash_gives_same_front(nb201, tmp_path: Path, name: str, kwargs: dict, budget: int) -> None:
    journal = kwargs.get("storage") == "JOURNAL"
    if journal:  # a journal file outside the run directories, one per run
        kwargs = {**kwargs, "storage": f"journal://{tmp_path / 'full.log'}"}
    objs = _objectives(nb201, proxy_accuracy(nb201))[: 1 if name == "pymoo_ga" else 2]
    full = run_search(nb201, objs, [], name, budget=budget, seed=5, out_dir=tmp_path / "a", searcher_kwargs=kwargs,
                      plot=False)
    if journal:
        kwargs = {**kwargs, "storage": f"journal://{tmp_path / 'resumed.log'}"}

    calls = {"n": 0}
    base = proxy_accuracy(nb201)

    def flaky(archs):
        calls["n"] += len(archs)
        if calls["n"] > budget // 2:
            raise Crash("killed while evaluating")
        return base(archs)

    crashing = _objectives(nb201, flaky)[: len(objs)]
    with pytest.raises(Crash):
        run_search(nb201, crashing, [], name, budget=budget, seed=5, out_dir=tmp_path / "b", searcher_kwargs=kwargs,
                   plot=False)
    logged = len(json.loads((tmp_path / "b" / CHECKPOINT).read_text())["queries"])
    assert 0 < logged <= budget // 2
    counter = CountingObjective(base)
    resumed = run_search(nb201, _objectives(nb201, counter)[: len(objs)], [], name, budget=budget, seed=5,
                         out_dir=tmp_path / "b", searcher_kwargs=kwargs, plot=False)
    assert resumed.arch_ids == full.arch_ids
    np.testing.assert_array_equal(resumed.F, full.F)
    np.testing.assert_array_equal(resumed.front_indices(), full.front_indices())
    # only what the crash lost is measured again: the logged queries are replayed from the checkpoint
    assert sorted(counter.seen) == sorted(full.arch_ids[logged:])


def test_resume_extends_budget_and_rejects_other_search(nb201, tmp_path: Path) -> None:
    objs = _objectives(nb201, proxy_accuracy(nb201))
    short = run_search(nb201, objs, [], "regularized_evolution", budget=20, seed=1, out_dir=tmp_path, plot=False)
    longer = run_search(nb201, objs, [], "regularized_evolution", budget=30, seed=1, out_dir=tmp_path, plot=False)
    straight = run_search(nb201, objs, [], "regularized_evolution", budget=30, seed=1)
    assert longer.arch_ids[:20] == short.arch_ids and longer.arch_ids == straight.arch_ids
    with pytest.raises(CheckpointMismatchError, match="belongs to another search"):
        run_search(nb201, objs, [], "regularized_evolution", budget=30, seed=2, out_dir=tmp_path)
    fresh = run_search(nb201, objs, [], "regularized_evolution", budget=10, seed=2, out_dir=tmp_path, resume=False,
                       plot=False)
    assert fresh.n == 10


def test_default_optuna_storage_is_sqlite_in_run_dir(nb201, tmp_path: Path) -> None:
    import optuna

    objs = _objectives(nb201, proxy_accuracy(nb201))
    first = run_search(nb201, objs, [], "optuna_tpe", budget=2, seed=0, out_dir=tmp_path, plot=False)
    again = run_search(nb201, objs, [], "optuna_tpe", budget=4, seed=0, out_dir=tmp_path, plot=False)
    study = optuna.load_study(study_name="nas_search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 4 and again.arch_ids[:2] == first.arch_ids
    assert [t.user_attrs["metrics"]["acc"] for t in study.trials] == list(again.metric("acc"))
