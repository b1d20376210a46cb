from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from nas.search import (
    Constraint,
    InfeasibleConstraintsError,
    Objective,
    StorageError,
    macs_objective,
    params_objective,
    run_search,
)

from .conftest import CountingObjective, proxy_accuracy


def test_results_directory(nb201, proxy_objective, tmp_path: Path) -> None:
    macs = macs_objective(nb201)
    res = run_search(nb201, [proxy_objective, macs], [Constraint.on(macs, upper=150.0)], "pymoo_nsga2", budget=30,
                     seed=0, out_dir=tmp_path, searcher_kwargs={"pop_size": 10})
    for f in ("evaluated.csv", "front.csv", "result.json", "pareto.png", "checkpoint.json"):
        assert (tmp_path / f).stat().st_size > 0
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(tmp_path / "evaluated.csv")))
    front_rows = list(csv.DictReader(open(tmp_path / "front.csv")))
    doc = json.loads((tmp_path / "result.json").read_text())
    assert len(rows) == 30 == doc["n_queries"]
    assert [r["arch_id"] for r in front_rows] == [res.arch_ids[i] for i in res.front_indices()]
    assert [r["arch_id"] for r in doc["front"]] == [r["arch_id"] for r in front_rows]
    # every front point is feasible and no evaluated feasible point dominates it
    F, feas = res.F, res.feasible
    for i in res.front_indices():
        assert feas[i] and macs.fn([res.archs[i]])[0] <= 150.0
        assert not np.any(np.all(F[feas] <= F[i], axis=1) & np.any(F[feas] < F[i], axis=1))
    # architectures round-trip from the saved dicts (enough to export any point)
    assert nb201.from_dict(doc["front"][0]["arch"]).id == doc["front"][0]["arch_id"]
    assert doc["hypervolume"] == pytest.approx(res.hypervolume()) and doc["hypervolume"] > 0


def test_cheap_constraint_nobody_meets_fails_before_any_query(nb201) -> None:
    counter = CountingObjective(proxy_accuracy(nb201))
    macs = macs_objective(nb201)
    expected = r"no architecture of 'nb201' meets macs_M <= 1.0.*closest"
    with pytest.raises(InfeasibleConstraintsError, match=expected) as err:
        run_search(nb201, [Objective("acc", counter, direction="max", expensive=True)],
                   [Constraint.on(macs, upper=1.0)], "random", budget=10)
    assert counter.seen == []
    smallest = min(nb201.macs(nb201.decode([i] * 6)) for i in range(5)) * 1e-6
    assert err.value.closest["macs_M"] == pytest.approx(smallest)  # the cheapest cell: every edge 'none'


def test_expensive_constraint_nobody_meets_reports_closest_after_saving(nb201, tmp_path: Path) -> None:
    acc = Objective("acc", proxy_accuracy(nb201), direction="max", expensive=True)
    floor = Constraint.on(acc, lower=1000.0)
    with pytest.raises(InfeasibleConstraintsError, match="none of the 12 evaluated architectures meets") as err:
        run_search(nb201, [acc, params_objective(nb201)], [floor], "random", budget=12, seed=0, out_dir=tmp_path)
    res = err.value.result
    assert res is not None and res.n == 12 and not res.feasible.any()
    assert err.value.closest["acc"] == pytest.approx(res.metric("acc").max())
    assert json.loads((tmp_path / "result.json").read_text())["n_queries"] == 12


@pytest.mark.parametrize("url", ["sqlite:////nonexistent/dir/study.db", "nosuchdb://x", "journal:///nonexistent/x.log"])
def test_storage_that_cannot_be_opened(nb201, proxy_objective, url: str) -> None:
    with pytest.raises(StorageError, match="(?s)cannot open Optuna storage.*Accepted forms"):
        run_search(nb201, [proxy_objective], [], "optuna_tpe", budget=3, searcher_kwargs={"storage": url})


def test_trace_and_best(nb201, proxy_objective) -> None:
    res = run_search(nb201, [proxy_objective], [], "random", budget=20, seed=2)
    acc = res.metric("proxy_acc")
    np.testing.assert_allclose(res.trace(), np.maximum.accumulate(acc))
    assert res.best() == int(np.argmax(acc))
