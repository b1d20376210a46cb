"""The CQAP encoding: mode one-hots, one-hot weight and activation bits per free slot (first/last not encoded),
inactive slots zero, the base architecture's one-hot first when the architecture is searched."""

from __future__ import annotations

import numpy as np
import pytest

from predictors import FEATURES, FeatureUnavailableError, create_predictor, kendall_tau
from search_spaces import create_space

BITS = [3, 4, 6, 8]


@pytest.fixture(scope="module")
def space():
    return create_space("quant_ofa_mbv3_fmnist", w_bits=BITS, a_bits=BITS)


def test_layout(space):
    enc = FEATURES.create("cqap", space=space)
    free = space._free_slots()
    assert len(free) == len(space.slots) - 2
    base = space.base.onehot(space.base.max_arch()).size
    joint = space.policy_for(space.base.min_arch(), 4, 6, w_granularity="per_channel", w_symmetric=False,
                             a_symmetric=True)
    x = enc([joint])[0]
    assert x.size == base + 6 + len(free) * 2 * len(BITS)
    np.testing.assert_array_equal(x[:base], space.base.onehot(joint.arch))
    # modes: (per_tensor, per_channel), (sym, asym), (sym, asym); asymmetric is a 1 (the reference wrote 0)
    np.testing.assert_array_equal(x[base:base + 6], [0, 1, 0, 1, 1, 0])
    w = x[base + 6: base + 6 + len(free) * 4].reshape(len(free), 4)
    a = x[base + 6 + len(free) * 4:].reshape(len(free), 4)
    on = space.lay.active(joint.arch)[free]
    np.testing.assert_array_equal(w[on], np.tile([0, 1, 0, 0], (on.sum(), 1)))  # 4 bits
    np.testing.assert_array_equal(a[on], np.tile([0, 0, 1, 0], (on.sum(), 1)))  # 6 bits
    assert not w[~on].any() and not a[~on].any() and (~on).any()


def test_fixed_arch_encodes_only_the_policy_and_layer_modes_are_refused(space):
    fixed = create_space("quant_ofa_mbv3_fmnist", w_bits=BITS, a_bits=BITS, fixed_arch=space.base.max_arch())
    enc = FEATURES.create("cqap", space=fixed)
    assert enc([fixed.sample(0)]).shape[1] == 6 + (len(fixed.slots) - 2) * 8
    with pytest.raises(FeatureUnavailableError, match="mode_scope='global'"):
        FEATURES.create("cqap", space=create_space("quant_ofa_mbv3_fmnist", mode_scope="layer"))
    with pytest.raises(FeatureUnavailableError, match="needs a joint space"):
        FEATURES.create("cqap", space=create_space("ofa_mbv3_fmnist"))


def test_a_predictor_on_cqap_ranks_a_bit_driven_target(space):
    """Ranking a target that depends on per-layer bits only through the encoding works (real fit, held out)."""
    rng = np.random.default_rng(0)
    fixed = create_space("quant_ofa_mbv3_fmnist", w_bits=BITS, a_bits=BITS, fixed_arch=space.base.max_arch())
    archs = [fixed.sample(rng) for _ in range(500)]
    free = fixed._free_slots()
    y = np.array([np.mean([a.policy.layers[i].w_bits + 0.5 * a.policy.layers[i].a_bits for i in free])
                  for a in archs])
    p = create_predictor("ridge_svr", space=fixed, features="cqap", seed=0).fit(archs[:400], y[:400])
    assert kendall_tau(y[400:], p.predict(archs[400:])) > 0.75
