"""Searches start from the space's anchors (corner architectures a random start rarely draws): the largest and
smallest arch, and for a joint arch x bits space those at every uniform bit-width. Without them the quantised
front missed its accurate end: NSGA-II never drew a policy with every layer at 8 bits (bench/eqnet_front.py)."""

from __future__ import annotations

import dataclasses

import numpy as np

from nas.experiments import create_experiment
from nas.search import Objective, SearchProblem, macs_objective
from nas.search.searchers import create_searcher
from search_spaces import create_space


def test_joint_space_anchors_are_uniform_policies_of_the_base_corners() -> None:
    space = create_experiment("eqnet_fmnist").space
    anchors = space.anchors()
    bits = sorted(set(space.w_bits) & set(space.a_bits))
    assert len(anchors) == 2 * 2 * len(bits)  # two corners x (default, deployment modes) x uniform bits
    assert {a.arch for a in anchors} == {space.base.min_arch(), space.base.max_arch()}
    top = [a for a in anchors if a.arch == space.base.max_arch() and a.policy.layers[1].w_bits == max(bits)]
    assert len(top) == 2 and all({(q.w_bits, q.a_bits) for q in t.policy.layers if q} == {(8, 8)} for t in top)
    deploy = {(q.w_granularity, q.w_symmetric, q.a_symmetric) for q in top[1].policy.layers if q}
    assert deploy == {("per_channel", True, False)}  # what nas.export format=onnx_int8 runs
    per_tensor_only = dataclasses.replace(space, w_granularities=("per_tensor",))
    assert len(per_tensor_only.anchors()) == 2 * len(bits)  # deployment modes outside the space: not anchored


def test_the_first_population_holds_the_anchors_and_anchors_false_does_not() -> None:
    space = create_space("ofa_mbv3_tiny")
    problem = SearchProblem(space, [macs_objective(space)])
    corners = {tuple(x) for x in problem.view.canonical(problem.view.encode(space.anchors()))}
    for anchors, expect in ((True, True), (False, False)):
        s = create_searcher("pymoo_nsga2", pop_size=20, anchors=anchors)
        s.setup(problem, seed=0)
        first = {tuple(x) for x in problem.view.canonical(s.ask())}
        assert (corners <= first) is expect


def test_quantised_front_reaches_the_accurate_end() -> None:
    """On the embedded quantised default, the searched front's most accurate point is predicted at least as
    accurate as the largest architecture at uniform W8A8 (without anchors: 85.7-86.8 against 87.7 over seeds 0-2)."""
    from nas.search.loop import run_search

    exp = create_experiment("eqnet_fmnist")
    space = exp.space
    acc = Objective("top1", lambda archs: np.asarray(exp.accuracy(archs)), direction="max", expensive=True)
    result = run_search(space, [acc, macs_objective(space)], searcher="pymoo_nsga2", budget=400, seed=0,
                        searcher_kwargs={"pop_size": 50}, save=False, plot=False)
    best = float(np.max(result.values[:, 0]))
    w8a8 = float(exp.accuracy([space.policy_for(space.base.max_arch(), 8, 8)])[0])
    assert best >= w8a8 - 1e-9


def test_nb201_anchors_are_its_cheapest_and_costliest_cells() -> None:
    """NB201's choice order puts avg-pool last, so the generic corners would not be the largest cell."""
    space = create_space("nb201_tiny")
    small, large = space.anchors()
    X = np.stack([space.encode(space.sample(i)) for i in range(300)])
    macs = [space.macs(space.decode(x)) for x in X]
    assert space.macs(small) <= min(macs) and space.macs(large) >= max(macs)
    assert set(large.ops) == {"nor_conv_3x3"}
