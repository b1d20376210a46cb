"""Quantisation policies and joint arch x policy spaces: values, encodings, validation, counts and costs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from search_spaces import create_space
from search_spaces.quant import InvalidPolicyError, JointArch, LayerQuant, QuantPolicy, create_joint_space
from search_spaces.quant_costs import average_bits, bitops, model_size_bytes
from search_spaces.quant_layouts import FixedLayout, SlotCost

SPACES = ["quant_nb201_tiny", "quant_ofa_mbv3_tiny", "quant_nb201", "quant_ofa_mbv3"]
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"


@pytest.mark.parametrize("name", SPACES)
def test_encode_decode_json_round_trip(name: str) -> None:
    space = create_space(name)
    rng = np.random.default_rng(0)
    for _ in range(25):
        joint = space.sample(rng)
        assert space.decode(space.encode(joint)) == joint
        assert space.from_json(space.to_json(joint)) == joint
        assert space.from_dict(space.to_dict(joint)).id == joint.id
        child = space.crossover(joint, space.mutate(joint, rng, 0.3), rng)
        assert space.validate(child) is child
    assert create_space(**space.spec()) == space


def test_policy_token_and_dict_round_trip() -> None:
    q = LayerQuant(4, 3, "per_channel", True, False)
    assert q.token == "w4cs.a3a" and LayerQuant.parse(q.token) == q
    policy = QuantPolicy((LayerQuant(8, 8), None, q))
    assert policy.id == "w8ts.a8s-x-w4cs.a3a"
    assert QuantPolicy.from_dict(policy.to_dict()) == policy
    assert QuantPolicy.from_dict({"layers": [q.to_dict(), None, "w4cs.a3a"]}).layers[2] == q


@pytest.mark.parametrize("bad, match", [
    (dict(w_bits=9, a_bits=8), r"w_bits=9 .*2\.\.8"),
    (dict(w_bits=8, a_bits=1), r"a_bits=1 .*2\.\.8"),
    (dict(w_bits=4.0, a_bits=4), r"w_bits=4\.0"),
    (dict(w_bits=4, a_bits=4, a_granularity="per_channel"), r"activations are quantised per tensor only"),
    (dict(w_bits=4, a_bits=4, w_granularity="per_group"), r"per_tensor.*per_channel"),
])
def test_bad_layer_policies_are_rejected(bad: dict, match: str) -> None:
    with pytest.raises(InvalidPolicyError, match=match):
        LayerQuant(**bad)


def test_bad_policies_in_a_space_are_rejected() -> None:
    space = create_space("quant_nb201_tiny")
    arch = space.base.parse(CELL)
    good = space.policy_for(arch, 4, 4)
    layers = list(good.policy.layers)
    with pytest.raises(InvalidPolicyError, match="w_bits=9"):
        space.from_dict({"arch": space.base.to_dict(arch), "policy": {"layers": ["w9ts.a8s"] + [None] * 25}})
    with pytest.raises(InvalidPolicyError, match="first/last layer, fixed at W8A8"):
        space.validate(JointArch(arch, QuantPolicy((LayerQuant(4, 4),) + tuple(layers[1:]))))
    inactive = int(np.flatnonzero(~space.lay.active(arch))[0])
    layers[inactive] = LayerQuant(4, 4)
    with pytest.raises(InvalidPolicyError, match="does not fit architecture .*does not run in it but has a policy"):
        space.validate(JointArch(arch, QuantPolicy(tuple(layers))))
    mixed = list(good.policy.layers)
    mixed[1] = LayerQuant(4, 4, "per_channel")
    with pytest.raises(InvalidPolicyError, match="global granularity"):
        space.validate(JointArch(arch, QuantPolicy(tuple(mixed))))
    with pytest.raises(InvalidPolicyError, match="bit-widths must be integers"):
        create_space("quant_nb201_tiny", w_bits=[2, 9])


def test_canonical_values_ignore_inactive_genes() -> None:
    space = create_space("quant_ofa_mbv3_tiny")
    joint = space.policy_for(space.base.min_arch(), 4, 4)
    x = space.encode(joint)
    inactive = np.flatnonzero(~space.active(joint))
    assert inactive.size > 0
    _, hi = space.bounds()
    y = x.copy()
    y[inactive] = hi[inactive]
    assert space.decode(y) == joint
    assert space.onehot(joint)[space.onehot(joint) > 0].size == space.active(joint).sum()


def test_onehot_is_one_hot_bits_per_layer() -> None:
    space = create_space("quant_nb201_tiny", fixed_arch=create_space("nb201_tiny").parse(CELL))
    joint = space.policy_for(space.fixed_arch, 3, 5)
    feats = space.onehot(joint)
    offset = sum(len(g.choices) for g in space.genes() if not g.name.startswith(("w_bits", "a_bits")))
    bits = feats[offset:].reshape(-1, len(space.w_bits))
    on = space.lay.active(space.fixed_arch)[[i for i in range(len(space.slots)) if i not in space.fixed_slots]]
    assert np.all(bits.sum(1) == np.concatenate([on, on]))
    assert np.all(bits[: len(on)][on].argmax(1) == space.w_bits.index(3))
    assert np.all(bits[len(on):][on].argmax(1) == space.a_bits.index(5))


def _brute_force_count(space) -> int:
    """Sum over every base architecture of the product of per-slot policy choices (a second, direct count)."""
    base, total = space.base, 0
    seen = set()
    bits = len(space.w_bits) * len(space.a_bits)
    modes = len(space.w_granularities) * len(space.w_symmetries) * len(space.a_symmetries)
    for idx in itertools.product(*[range(len(g.choices)) for g in base.genes()]):
        arch = base.decode(np.array(idx))
        if arch in seen:
            continue
        seen.add(arch)
        on = space.lay.active(arch)
        per_slot = [(1 if i in space.fixed_slots else bits) * (modes if space.mode_scope == "layer" else 1)
                    for i in range(len(on)) if on[i]]
        total += math.prod(per_slot) * (modes if space.mode_scope == "global" else 1)
    return total


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_cardinality_matches_enumeration(scope: str) -> None:
    nb = create_space("nb201_tiny", ops=("none", "skip_connect", "nor_conv_1x1"))
    space = create_joint_space(nb, w_bits=[4, 8], a_bits=[8], w_symmetries=[True], mode_scope=scope)
    assert space.cardinality() == _brute_force_count(space)
    mb = create_space("ofa_mbv3_tiny", kernels=(3,), expands=(2, 3), depths=(1, 2), resolutions=(28,))
    space = create_joint_space(mb, w_bits=[2, 8], a_bits=[8], w_granularities=["per_tensor"], mode_scope=scope)
    assert space.cardinality() == _brute_force_count(space)


def test_sampling_draws_modes_through_the_same_genes() -> None:
    space = create_space("quant_nb201_tiny", mode_scope="layer")
    rng = np.random.default_rng(3)
    modes = {(q.w_granularity, q.w_symmetric, q.a_symmetric)
             for q in space.sample(rng).policy.active_layers()}
    assert len(modes) > 1  # per-layer scope: layers differ
    joint = space.policy_for(space.base.parse(CELL), 8, 8)
    resampled = space.sample_modes(joint, rng)
    assert [q.w_bits for q in resampled.policy.active_layers()] == [8] * len(joint.policy.active_layers())
    assert resampled.arch == joint.arch


def test_model_size_average_bits_and_bitops_by_hand() -> None:
    costs = (SlotCost(0, 100, 1000, 50, 10), SlotCost(1, 2000, 8000, 400, 20), SlotCost(2, 30, 30, 10, 3))
    layout = FixedLayout(("a", "b", "c"), costs)

    class Static:
        name = "static"

        def params(self, arch) -> int:
            return 2130 + 40  # 40 fp32 extras (biases, BN)

    from search_spaces.quant import JointSpace

    base = create_space("nb201_tiny")
    space = JointSpace(base=base, layout=layout, fixed_arch=base.parse(CELL))
    object.__setattr__(space, "params", Static().params)
    joint = space.with_bits(space.policy_for(space.fixed_arch, 4, 4, w_granularity="per_channel",
                                              w_symmetric=False), [3], [5])
    # slot 0 and 2 are fixed at W8A8: 100 + 30 bytes; slot 1 at 3 bits: 2000*3/8 = 750 bytes; 40 fp32 extras;
    # per-channel asymmetric weights: (10 + 20 + 3) channels x (scale + zero); activations symmetric: 1 scale each
    expected = 100 + 750 + 30 + 4 * 40 + 4 * 2 * (10 + 20 + 3) + 4 * 3
    assert model_size_bytes(space, joint) == expected
    assert average_bits(space, joint, "w") == 3.0 and average_bits(space, joint, "a") == 5.0
    assert average_bits(space, joint, "w", include_fixed=True) == pytest.approx((800 + 6000 + 240) / 2130)
    assert bitops(space, joint) == 1000 * 64 + 8000 * 15 + 30 * 64


@pytest.mark.parametrize("name", ["quant_nb201_tiny", "quant_ofa_mbv3_tiny"])
def test_size_falls_with_bits_and_w8_is_a_quarter_of_fp32_weights(name: str) -> None:
    space = create_space(name)
    arch = space.base.max_arch()
    sizes = [model_size_bytes(space, space.policy_for(arch, b, b)) for b in (8, 6, 4, 2)]
    assert sizes == sorted(sizes, reverse=True)
    quantised = sum(c.weights for c in space.lay.costs(arch))
    other = space.base.params(arch) - quantised
    assert 0 < other < quantised
    n_running = int(space.lay.active(arch).sum())
    assert sizes[0] == quantised + 4 * other + 4 * 2 * n_running  # W8: 1 byte/weight, scales per tensor
