"""Quantisation-policy search on a joint space: size and average-bit objectives, a measured fidelity objective of a
calibrated quantised supernet, the searchers of nas.search, and a predictor on the one-hot policy encoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge

from nas.search import Constraint, Objective, create_objective, predictor_objective, run_search
from nas.search.objectives_quant import avg_bits_objective, model_size_objective
from search_spaces import create_space
from search_spaces.quant_costs import average_bits, model_size_bytes
from supernets import create_supernet
from supernets.quant import calibrate, full_precision

CELL = {"arch_str": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"}


@pytest.fixture(scope="module")
def setup():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    space = create_space("quant_nb201_tiny", fixed_arch=CELL, w_bits=[4, 5, 6, 8], a_bits=[4, 5, 6, 8])
    net = create_supernet("quant", space).eval()
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    calibrate(net, x, steps=10, max_samples=2048)
    with torch.no_grad(), full_precision(net):
        ref = net(x)
    ref = ref - ref.mean(0)  # an untrained net's logits are mostly its bias: compare the input-dependent part

    def fidelity(archs):
        """-log10 of the relative error of the quantised subnet's logits w.r.t. full precision (measured)."""
        out = []
        for a in archs:
            with torch.no_grad(), net.use(a):
                y = net(x)
            out.append(-float(torch.log10(((y - y.mean(0)) - ref).norm() / ref.norm())))
        return np.array(out)

    yield space, Objective("fidelity", fidelity, direction="max", expensive=True)
    torch.set_num_threads(before)


def test_objectives_are_registered_and_agree_with_the_cost_functions(setup) -> None:
    space, _ = setup
    archs = [space.sample(i) for i in range(5)]
    size = create_objective("model_size", space)
    bits = create_objective("avg_bits", space, which="a")
    assert np.allclose(size(archs), [model_size_bytes(space, a) / 1e3 for a in archs])
    assert np.allclose(bits(archs), [average_bits(space, a, "a") for a in archs])
    assert create_objective("bitops", space)(archs).min() > 0
    with pytest.raises(TypeError, match="joint"):
        create_objective("model_size", create_space("nb201_tiny"))


def test_policy_search_respects_the_bit_constraint_and_trades_size_for_fidelity(setup, tmp_path) -> None:
    space, fidelity = setup
    size, wbits = model_size_objective(space), avg_bits_objective(space, which="w")
    result = run_search(space, [size, fidelity], [Constraint.on(wbits, lower=4.0)], "evolution", budget=48,
                        seed=0, searcher_kwargs={"population_size": 16}, out_dir=tmp_path, plot=False)
    front = result.front_indices()
    assert len(front) >= 2 and np.all(result.feasible[front])
    archs = [result.archs[i] for i in front]
    assert np.all(wbits(archs) >= 4.0)
    s, f = result.metric("size_kB")[front], result.metric("fidelity")[front]
    assert f[np.argmax(s)] > f[np.argmin(s)]  # the larger end of the front is the more faithful one
    uniform = [space.policy_for(space.fixed_arch, b, b) for b in (4, 5, 6, 8)]
    assert np.all(np.diff(fidelity(uniform)) > 0)  # the measurement: more bits, closer to full precision


def test_onehot_predictor_learns_fidelity_and_serves_as_objective(setup) -> None:
    space, fidelity = setup
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(100)]
    y = fidelity(archs)
    X = space.onehot_many(archs)
    model = Ridge(alpha=1.0).fit(X[:75], y[:75])
    rho = spearmanr(model.predict(X[75:]), y[75:])[0]
    assert rho > 0.4  # held-out rank correlation of a linear model on one-hot bits per layer

    class OneHotPredictor:
        def predict(self, batch):
            return model.predict(space.onehot_many(batch))

    predicted = predictor_objective(space, predictor=OneHotPredictor(), name="fidelity_pred")
    assert np.allclose(predicted(archs[75:]), model.predict(X[75:]))
