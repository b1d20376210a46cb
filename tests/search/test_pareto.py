from __future__ import annotations

import numpy as np
import pytest

from nas.search import hv_improvement_2d, hypervolume, pareto_front


def test_front_of_hand_made_set() -> None:
    F = np.array([
        [1.0, 5.0],  # front
        [2.0, 3.0],  # front
        [2.0, 4.0],  # dominated by [2, 3]
        [3.0, 3.0],  # dominated by [2, 3]
        [4.0, 1.0],  # front
        [4.0, 1.0],  # equal to a front point: another architecture with the same values, kept
        [5.0, 2.0],  # dominated
    ])
    assert pareto_front(F).tolist() == [0, 1, 4, 5]
    # feasibility first: [2, 3] is infeasible, so [2, 4] and [3, 3] (neither dominates the other) join
    cv = np.array([0, 1.0, 0, 0, 0, 0, 0])
    assert pareto_front(F, cv).tolist() == [0, 2, 3, 4, 5]
    assert pareto_front(F, np.ones(7)).tolist() == []


def test_hypervolume_of_known_staircase() -> None:
    F = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    # boxes to ref (4, 4): 3x1 + 2x1 + 1x1 stacked = area 6
    assert hypervolume(F, np.array([4.0, 4.0])) == pytest.approx(6.0)
    assert hypervolume(np.array([[5.0, 5.0]]), np.array([4.0, 4.0])) == 0.0  # beyond the reference point


def test_hv_improvement_2d_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    ref = np.array([1.1, 1.2])
    for _ in range(50):
        front = rng.random((rng.integers(0, 7), 2))
        cands = rng.random((15, 2)) * 1.2
        base = hypervolume(front, ref) if len(front) else 0.0
        brute = [hypervolume(np.vstack([front, c]), ref) - base for c in cands]
        np.testing.assert_allclose(hv_improvement_2d(front, cands, ref), brute, atol=1e-12)
