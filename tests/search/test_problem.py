from __future__ import annotations

import numpy as np
import pytest

from nas.search import Constraint, Objective, SearchProblem, macs_objective, params_objective
from nas.search.encoded import EncodedView
from search_spaces import create_space
from search_spaces.layers import layer_macs, layer_params

from .conftest import CountingObjective, proxy_accuracy


def test_encoded_view_matches_space_per_arch() -> None:
    space = create_space("ofa_mbv3")
    view = EncodedView(space)
    rng = np.random.default_rng(0)
    X = rng.integers(0, view.sizes, size=(64, view.n_genes))
    archs = [space.decode(x) for x in X]
    np.testing.assert_array_equal(view.canonical(X), space.encode_many(archs))
    np.testing.assert_array_equal(view.onehot(X), space.onehot_many(archs))
    np.testing.assert_array_equal(view.active(X), np.stack([space.active(a) for a in archs]))


def test_encoded_macs_params_are_exact_for_mbv3() -> None:
    space = create_space("ofa_mbv3")
    X = EncodedView(space).sample(40, np.random.default_rng(1))
    archs = [space.decode(x) for x in X]
    p = SearchProblem(space, [macs_objective(space, scale=1.0), params_objective(space, scale=1.0)])
    np.testing.assert_array_equal(p.values(X, ["macs_M", "params_M"]),
                                  [[space.macs(a), space.params(a)] for a in archs])
    assert [sum(map(layer_macs, space.layers(a))) for a in archs] == [space.macs(a) for a in archs]
    assert [sum(map(layer_params, space.layers(a))) for a in archs] == [space.params(a) for a in archs]


def test_cache_evaluates_each_architecture_once(nb201) -> None:
    counter = CountingObjective(proxy_accuracy(nb201))
    p = SearchProblem(nb201, [Objective("acc", counter, direction="max", expensive=True), macs_objective(nb201)])
    X = p.view.sample(10, np.random.default_rng(0))
    first = p.evaluate_x(np.concatenate([X, X[:3]]))  # in-batch repeats
    assert first.new.sum() == len({x.tobytes() for x in X})
    second = p.evaluate_x(X[::-1])
    assert not second.new.any()
    assert len(counter.seen) == len(set(counter.seen)) == p.n_queries
    np.testing.assert_array_equal(second.F, first.F[: len(X)][::-1])
    assert np.all(first.F[:, 0] == -proxy_accuracy(nb201)(p.view.decode(np.concatenate([X, X[:3]]))))


def test_inactive_genes_do_not_make_new_architectures() -> None:
    space = create_space("ofa_mbv3_tiny")
    counter = CountingObjective(lambda archs: np.array([space.macs(a) for a in archs], float))
    p = SearchProblem(space, [Objective("macs", counter, expensive=True)])
    x = space.encode(space.min_arch())  # depth 1: every second block of each stage is inactive
    inactive = np.flatnonzero(~space.active(space.min_arch()))
    y = x.copy()
    y[inactive[inactive < 2 * 10]] = 1  # change kernels/expands of inactive blocks only
    ev = p.evaluate_x(np.stack([x, y]))
    assert ev.new.tolist() == [True, False] and len(counter.seen) == 1


def test_cheap_metrics_cost_no_queries(nb201) -> None:
    counter = CountingObjective(proxy_accuracy(nb201))
    acc = Objective("acc", counter, direction="max", expensive=True)
    macs = macs_objective(nb201)
    p = SearchProblem(nb201, [acc, macs], [Constraint.on(macs, upper=60.0)])
    X = p.view.sample(50, np.random.default_rng(3))
    margin = np.array([nb201.macs(a) for a in p.view.decode(X)]) * 1e-6 - 60.0
    np.testing.assert_allclose(p.cheap_violation(X), np.clip(margin, 0, None))
    assert counter.seen == [] and p.n_queries == 0
    ev = p.evaluate_x(X[:5])
    np.testing.assert_allclose(ev.G[:, 0], margin[:5])
    assert 0 < (margin > 0).sum() < len(X)


def test_within_budget_counts_only_new_distinct(nb201) -> None:
    p = SearchProblem(nb201, [params_objective(nb201)])
    X = p.view.sample(6, np.random.default_rng(4))
    p.evaluate_x(X[:2])
    batch = np.concatenate([X[:2], X[2:3], X[2:3], X[3:]])  # 2 known, then new, repeat, 3 new
    assert p.within_budget(batch, 2) == 5
    assert p.within_budget(batch, 0) == 2
    assert p.within_budget(batch, 10) == len(batch)


def test_constraint_violation_and_declaration_errors(nb201) -> None:
    c = Constraint("lat", lambda a: np.zeros(len(a)), lower=1.0, upper=3.0)
    np.testing.assert_allclose(c.violation(np.array([0.0, 2.0, 5.0])), [1.0, -1.0, 2.0])
    with pytest.raises(ValueError, match="upper and/or lower"):
        Constraint("lat", lambda a: a)
    with pytest.raises(ValueError, match="direction must be one of"):
        Objective("acc", lambda a: a, direction="maximise")
    macs = macs_objective(nb201)
    with pytest.raises(ValueError, match="two different functions"):
        SearchProblem(nb201, [macs], [Constraint(macs.name, lambda a: np.zeros(len(a)), upper=1.0)])
    bad = Objective("bad", lambda a: np.zeros(len(a) + 1))
    with pytest.raises(ValueError, match="returned 3 values for 2"):
        SearchProblem(nb201, [bad]).evaluate_x(np.zeros((2, 6), dtype=np.int64) + np.array([[0], [1]]))


def test_encoded_macs_params_match_space_for_nb201(nb201) -> None:
    X = EncodedView(nb201).sample(200, np.random.default_rng(5))
    archs = [nb201.decode(x) for x in X]
    for make in (macs_objective, params_objective):
        obj = make(nb201, scale=1.0)
        kind = "macs" if make is macs_objective else "params"
        np.testing.assert_array_equal(obj.fn_x(X), [getattr(nb201, kind)(a) for a in archs])
    p = SearchProblem(nb201, [macs_objective(nb201)])
    np.testing.assert_allclose(p.values(X, ["macs_M"])[:, 0], [nb201.macs(a) * 1e-6 for a in archs])
