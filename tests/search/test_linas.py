from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from nas.search import EncodedView, Objective, linas_search, params_objective

from .conftest import CountingObjective, proxy_accuracy


class RidgeOnehot:
    """A minimal predictor with the predictors' contract (fit(archs, y), predict(archs)) and the batched
    ``predict_encoded`` a searcher uses for whole populations."""

    def __init__(self, space: Any) -> None:
        self.space, self.model, self.view = space, Ridge(alpha=1.0), EncodedView(space)

    def fit(self, archs: Sequence[Any], y: np.ndarray) -> RidgeOnehot:
        self.model.fit(self.space.onehot_many(list(archs)), y)
        return self

    def predict(self, archs: Sequence[Any]) -> np.ndarray:
        return self.model.predict(self.space.onehot_many(list(archs)))

    def predict_encoded(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(self.view.onehot(X))


def _run(nb201, fn, out_dir=None, two_objectives=True):
    objectives = [Objective("acc", fn, direction="max", expensive=True), params_objective(nb201)]
    inner = ("pymoo_nsga2", {"pop_size": 16}) if two_objectives else ("evolution", {"population_size": 20})
    return linas_search(nb201, objectives[: 2 if two_objectives else 1], predictor_factory=lambda: RidgeOnehot(nb201),
                        rounds=3, batch_size=10, inner_searcher=inner[0], inner_kwargs=inner[1], inner_budget=160,
                        seed=0, out_dir=out_dir)


def test_linas_rounds_measure_new_archs_and_improve(nb201) -> None:
    counter = CountingObjective(proxy_accuracy(nb201))
    out = _run(nb201, counter, two_objectives=False)
    res = out.result
    assert res.n == 30 and len(counter.seen) == 30 == len(set(counter.seen))  # never re-measured
    assert [r.n_measured for r in out.rounds] == [10, 20, 30]
    assert out.rounds[0].batch_kendall_tau == {} and np.isfinite(out.rounds[1].batch_kendall_tau["acc"])
    acc = res.metric("acc")
    # predictor-proposed batches beat the random first batch (median: a linear predictor cannot foresee the few
    # cells whose output is cut off)
    assert np.median(acc[10:]) > np.median(acc[:10]) + 2.0 and acc[10:].max() >= acc[:10].max()


def test_linas_resume_after_crash(nb201, tmp_path: Path) -> None:
    full = _run(nb201, proxy_accuracy(nb201), tmp_path / "a").result
    calls = {"n": 0}
    base = proxy_accuracy(nb201)

    def flaky(archs):
        calls["n"] += len(archs)
        if calls["n"] > 20:
            raise RuntimeError("killed")
        return base(archs)

    with pytest.raises(RuntimeError, match="killed"):
        _run(nb201, flaky, tmp_path / "b")
    counter = CountingObjective(base)
    resumed = _run(nb201, counter, tmp_path / "b").result
    assert resumed.arch_ids == full.arch_ids
    assert sorted(counter.seen) == sorted(full.arch_ids[20:])
