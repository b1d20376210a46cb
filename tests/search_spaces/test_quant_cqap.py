"""EQ-Net's probability map: draws follow the target average bit-width, cover the range evenly, and are valid,
seeded policies of the joint space; bad targets and spaces are refused."""

from __future__ import annotations

import numpy as np
import pytest

from search_spaces import create_space
from search_spaces.errors import BadInputError
from search_spaces.quant_costs import average_bits
from search_spaces.quant_cqap import build_bit_map


@pytest.fixture(scope="module")
def space():
    return create_space("quant_ofa_mbv3_fmnist", w_bits=[3, 4, 5, 6, 7, 8], a_bits=[3, 4, 5, 6, 7, 8])


@pytest.fixture(scope="module")
def bit_map(space):
    return build_bit_map(space, n_archs=60, per_arch=200, seed=0)


def test_map_rows_are_distributions_over_every_bin(space, bit_map):
    assert bit_map.n_bins == 26  # (8 - 3) / 0.2 + 1
    assert (bit_map.lo, bit_map.hi) == pytest.approx((3.4, 7.6))  # EQ-Net's range for 3..8-bit mobile nets
    for table in (bit_map.w_table, bit_map.a_table):
        np.testing.assert_allclose(table.sum(-1), 1.0)
    # a low bin puts most mass on low bits, a high bin on high bits
    low, high = bit_map.w_table[bit_map.bin_of(3.5)], bit_map.w_table[bit_map.bin_of(7.5)]
    assert (low[:, :2].sum(-1) > 0.6).all() and (high[:, -2:].sum(-1) > 0.6).all()


@pytest.mark.parametrize("target", [3.4, 5.5, 7.6])
def test_draws_follow_the_target(space, bit_map, target):
    rng = np.random.default_rng(1)
    draws = [bit_map.draw(rng, target=target) for _ in range(25)]
    for kind in ("w", "a"):
        avg = np.array([average_bits(space, j, kind) for j in draws])
        assert abs(avg.mean() - target) < 0.35, (kind, avg.mean())
    for j in draws:
        space.validate(j)  # first/last slot 8/8, inactive slots None, one global mode
        first, last = j.policy.layers[0], j.policy.layers[-1]
        assert (first.w_bits, first.a_bits, last.w_bits, last.a_bits) == (8, 8, 8, 8)


def test_draws_cover_the_range_where_uniform_bits_concentrate(space, bit_map):
    rng = np.random.default_rng(2)
    cqap = np.array([average_bits(space, j, "w") for j in bit_map.draw_many(60, rng)])
    uniform = np.array([average_bits(space, space.sample(rng), "w") for _ in range(60)])
    assert cqap.std() > 2.5 * uniform.std()
    assert cqap.min() < 4.0 and cqap.max() > 7.0
    assert uniform.min() > 4.0 and uniform.max() < 7.0


def test_draws_are_seeded(bit_map):
    a = [j.id for j in bit_map.draw_many(5, 7)]
    assert a == [j.id for j in bit_map.draw_many(5, 7)] and a != [j.id for j in bit_map.draw_many(5, 8)]


def test_bad_inputs(space, bit_map):
    with pytest.raises(BadInputError, match="outside the space's bit range 3..8"):
        bit_map.draw(0, target=9.0)
    with pytest.raises(BadInputError, match="needs a joint"):
        build_bit_map(create_space("ofa_mbv3_fmnist"))
    with pytest.raises(BadInputError, match="step > 0"):
        build_bit_map(space, step=0)
