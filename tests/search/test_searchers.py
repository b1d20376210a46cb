from __future__ import annotations

import numpy as np
import pytest

from nas.registry import UnknownNameError
from nas.search import SEARCHERS, SearcherConfigError, macs_objective, params_objective, run_search
from nas.search.searchers.pymoo_backend import ArchDuplicateElimination

from .conftest import table_acc

FAST = {"pymoo_ga": {"pop_size": 10}, "pymoo_nsga2": {"pop_size": 10}, "pymoo_nsga3": {"pop_size": 10},
        "pymoo_unsga3": {"pop_size": 10}, "evolution": {"population_size": 10},
        "optuna_nsga2": {"sampler_kwargs": {"population_size": 10}},
        "regularized_evolution": {"population_size": 10, "sample_size": 3}}


def _queries(nb201, objectives, name: str, seed: int, budget: int = 30) -> list[str]:
    return run_search(nb201, objectives, [], name, budget=budget, seed=seed, searcher_kwargs=FAST.get(name)).arch_ids


# eqnet_ga searches quantisation policies only (a joint space): its seeding is tested in test_eqnet_ga.py
@pytest.mark.parametrize("name", [n for n in SEARCHERS.names() if n != "eqnet_ga"])
def test_deterministic_under_seed(nb201, proxy_objective, name: str) -> None:
    objectives = [proxy_objective] if name == "pymoo_ga" else [proxy_objective, params_objective(nb201)]
    a = _queries(nb201, objectives, name, seed=3)
    b = _queries(nb201, objectives, name, seed=3)
    c = _queries(nb201, objectives, name, seed=4)
    assert a == b and len(a) == 30 and len(set(a)) == 30  # same queries, no architecture queried twice
    assert a != c


@pytest.mark.parametrize("name,budget", [("bayesian_linear", 40), ("optuna_tpe", 60),
                                         ("regularized_evolution", 60), ("pymoo_ga", 80), ("evolution", 80)])
def test_single_objective_beats_random_on_nb201(nb201, nb201_c10, name: str, budget: int) -> None:
    opt = max(nb201_c10.values())

    def regret(searcher: str) -> float:
        kw = {"pymoo_ga": {"pop_size": 16}, "evolution": {"population_size": 16},
              "regularized_evolution": {"population_size": 16, "sample_size": 4}}.get(searcher)
        return float(np.mean([opt - run_search(nb201, [table_acc(nb201, nb201_c10)], [], searcher, budget=budget,
                                               seed=s, searcher_kwargs=kw).trace()[-1] for s in range(6)]))

    assert regret(name) < regret("random")


def test_multi_objective_model_based_beats_random_hypervolume(nb201, nb201_c10) -> None:
    objectives = [params_objective(nb201), table_acc(nb201, nb201_c10)]

    def hv(name: str) -> float:
        return float(np.mean([run_search(nb201, objectives, [], name, budget=40, seed=s)
                              .hypervolume(np.array([1.6, -80.0])) for s in range(4)]))

    assert hv("bayesian_linear") > hv("random")


def test_unknown_searcher_and_wrong_objective_count(nb201, proxy_objective) -> None:
    with pytest.raises(UnknownNameError, match="did you mean .*'pymoo_nsga2'.*Available: bayesian_linear"):
        run_search(nb201, [proxy_objective], [], "pymoo_nsga", budget=5)
    with pytest.raises(SearcherConfigError, match="at most 1 objective"):
        run_search(nb201, [proxy_objective, macs_objective(nb201)], [], "pymoo_ga", budget=5)


def test_three_objectives_with_unsga3(nb201, proxy_objective) -> None:
    objectives = [proxy_objective, macs_objective(nb201), params_objective(nb201)]
    res = run_search(nb201, objectives, [], "pymoo_unsga3", budget=40, seed=0, searcher_kwargs={"pop_size": 12})
    assert res.F.shape == (40, 3) and len(res.front_indices()) >= 2


def test_duplicate_elimination_uses_arch_identity() -> None:
    from pymoo.core.population import Population

    from nas.search.encoded import EncodedView
    from search_spaces import create_space

    space = create_space("ofa_mbv3_tiny")
    view = EncodedView(space)
    x = space.encode(space.min_arch())
    y = x.copy()
    y[1] = 2  # kernel of an inactive block: the same network
    z = x.copy()
    z[0] = 1  # kernel of an active block: a different network
    dup = ArchDuplicateElimination(view)
    kept = dup.do(Population.new("X", np.stack([x, y, z])))
    assert len(kept) == 2
    assert len(dup.do(Population.new("X", np.stack([z])), Population.new("X", np.stack([y])))) == 1
    assert len(dup.do(Population.new("X", np.stack([y])), Population.new("X", np.stack([x])))) == 0
