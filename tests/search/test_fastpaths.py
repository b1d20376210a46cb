"""Whole-population fast paths: hashed store index (exact under collisions), screening values reused at
evaluation, NSGA-II crowding over all fronts at once, sparse features of an enumerated space."""

from __future__ import annotations

import numpy as np
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from nas.search import Constraint, Objective, SearchProblem, macs_objective, run_search
from nas.search.searchers import create_searcher
from nas.search.searchers.base import crowding_by_front
from search_spaces import create_space

from .conftest import proxy_accuracy


def _crowding_one_front(F: np.ndarray) -> np.ndarray:
    """Textbook NSGA-II crowding distance of one front."""
    n = len(F)
    if n <= 2:
        return np.full(n, np.inf)
    out = np.zeros(n)
    for j in range(F.shape[1]):
        o = np.argsort(F[:, j], kind="stable")
        span = F[o[-1], j] - F[o[0], j]
        out[o[0]] = out[o[-1]] = np.inf
        if span > 0:
            out[o[1:-1]] += (F[o[2:], j] - F[o[:-2], j]) / span
    return out


def test_crowding_by_front_matches_per_front_definition() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        F = rng.random((int(rng.integers(1, 60)), int(rng.integers(2, 4))))
        rank = np.zeros(len(F), dtype=np.int64)
        for i, front in enumerate(NonDominatedSorting().do(F)):
            rank[front] = i
        expected = np.zeros(len(F))
        for r in np.unique(rank):
            expected[rank == r] = _crowding_one_front(F[rank == r])
        np.testing.assert_allclose(crowding_by_front(F, rank), expected)


def test_store_index_stays_exact_when_hashes_collide(nb201) -> None:
    p = SearchProblem(nb201, [macs_objective(nb201)])
    p._index.hashes = lambda Xc: np.zeros(len(Xc), dtype=np.uint64)  # every row collides
    X = p.view.sample(40, np.random.default_rng(1))
    distinct = len(np.unique(X, axis=0))
    rows = p.rows(np.concatenate([X, X[::-1]]))
    assert len(np.unique(rows)) == distinct
    np.testing.assert_array_equal(rows[: len(X)], rows[len(X):][::-1])
    np.testing.assert_array_equal(p.encodings(rows[: len(X)]), X)
    np.testing.assert_array_equal(p.rows(X), rows[: len(X)])  # looked up again, nothing added
    assert len(p._archs) == distinct
    assert p.is_queried(X).sum() == 0
    p.evaluate_x(X[:5])
    assert p.is_queried(X[:5]).all() and not p.is_queried(X[5:]).any()


def test_screened_cheap_values_are_reused_and_equal_fresh_ones() -> None:
    space = create_space("ofa_mbv3")
    calls: list[int] = []
    macs = macs_objective(space)
    fast = macs.fn_x

    def counted(X: np.ndarray) -> np.ndarray:
        calls.append(len(X))
        return fast(X)

    lat = Objective("cost", macs.fn, fn_x=counted)
    p = SearchProblem(space, [lat], [Constraint.on(lat, upper=float(np.median(fast(p_sample(space)))))])
    X = p.view.sample(64, np.random.default_rng(2))
    screened = p.cheap_violation(X)
    assert calls == [64]
    ev = p.evaluate_x(X)
    assert calls == [64]  # the evaluation took the screened values
    np.testing.assert_allclose(ev.F[:, 0], fast(p.view.canonical(X)))
    np.testing.assert_allclose(np.clip(ev.G[:, 0], 0, None), screened)
    p.evaluate_x(p.view.sample(8, np.random.default_rng(3)))
    assert calls[-1] == 8  # after an evaluation the screening memo is gone


def p_sample(space) -> np.ndarray:
    return SearchProblem(space, [macs_objective(space)]).view.sample(256, np.random.default_rng(9))


def test_sparse_enumerated_features_equal_dense(nb201) -> None:
    acc = Objective("acc", proxy_accuracy(nb201), direction="max", expensive=True)
    s = create_searcher("bayesian_linear", pair_scale=0.2)
    s.setup(SearchProblem(nb201, [acc]), seed=0)
    idx, val = s._all_sparse
    dense = s._features(s.all_X[:300])
    w = np.random.default_rng(4).standard_normal(dense.shape[1])
    np.testing.assert_allclose((w[idx[:300]] * val[:300]).sum(1), dense @ w, rtol=1e-10, atol=1e-10)
    res = run_search(nb201, [acc], [], "bayesian_linear", budget=20, seed=1, save=False)
    assert len(np.unique(res.X, axis=0)) == res.n == 20
