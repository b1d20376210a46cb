"""searcher=eqnet_ga: every child lies in EQ-Net's window c - 0.5 < avg bits <= c (weights and activations), the
target comes from target_bits or an avg_bits<=c constraint, the search is seeded and climbs its objective."""

from __future__ import annotations

import numpy as np
import pytest

from nas.search import Constraint, Objective, run_search
from nas.search.objectives_quant import avg_bits_objective
from nas.search.searchers import SearcherConfigError
from search_spaces import create_space
from search_spaces.quant_costs import average_bits

CELL = {"arch_str": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"}


@pytest.fixture(scope="module")
def space():
    return create_space("quant_nb201_tiny", fixed_arch=CELL, w_bits=[2, 3, 4, 5, 6, 8], a_bits=[2, 3, 4, 5, 6, 8])


def _score(space):
    """A real, bit-dependent objective: bits of the earliest free slots count most (sensitivity falls with depth)."""
    free = space._free_slots()
    weights = 1.0 / (1.0 + np.arange(len(free)))

    def fn(archs):
        return np.array([sum(w * (a.policy.layers[i].w_bits + a.policy.layers[i].a_bits)
                             for w, i in zip(weights, free) if a.policy.layers[i] is not None) for a in archs])

    return Objective("score", fn, "max")


def _search(space, tmp_path, constraints=(), seed=0, **kwargs):
    return run_search(space, [_score(space)], constraints, "eqnet_ga", budget=160, seed=seed, out_dir=tmp_path,
                      searcher_kwargs={"population_size": 20, **kwargs}, plot=False)


def test_children_stay_in_the_window_and_the_search_climbs(space, tmp_path):
    res = _search(space, tmp_path, target_bits=4.0)
    archs = res.archs
    avg = np.array([[average_bits(space, a, k) for k in ("w", "a")] for a in archs])
    children = avg[20:]  # the first population may hold out-of-window fill-ins; children never do
    assert len(children) >= 100
    assert ((children > 3.5) & (children <= 4.0 + 1e-9)).all()
    score = res.values[:, list(res.metric_names).index("score")]
    assert score[20:].max() > score[:20].max()  # elitism + window: better policies at the same average bits
    again = _search(space, tmp_path / "again", target_bits=4.0)
    assert [a.id for a in again.archs] == [a.id for a in archs]


def test_target_from_an_avg_bits_constraint(space, tmp_path):
    res = _search(space, tmp_path, constraints=[Constraint.on(avg_bits_objective(space), upper=6.0)])
    assert res.searcher_config["target_bits"] is None
    avg = np.array([average_bits(space, a, "w") for a in res.archs[20:]])
    assert ((avg > 5.5) & (avg <= 6.0 + 1e-9)).all()


def test_bad_inputs(space, tmp_path):
    with pytest.raises(SearcherConfigError, match="needs a target average bit-width"):
        _search(space, tmp_path / "a")
    with pytest.raises(SearcherConfigError, match="leaves no policy in the window"):
        _search(space, tmp_path / "b", target_bits=12.0)
    with pytest.raises(SearcherConfigError, match="not a joint"):
        run_search(create_space("nb201_tiny"), [Objective("s", lambda a: np.zeros(len(a)), "max")], (), "eqnet_ga",
                   budget=10, searcher_kwargs={"target_bits": 4.0}, plot=False)
