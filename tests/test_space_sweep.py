"""Registry sweep: every registered space's capabilities against its own claims and its exported module."""

from __future__ import annotations

import numpy as np
import pytest

from hw_profiles import create_hw_profile
from nas.testing.sweep import BareSpace, check_ids, check_space
from search_spaces import SPACES, create_space
from search_spaces.base import has_capability
from search_spaces.errors import MissingCapabilityError

# the full-size quantised OFA spaces export on the CPU (their quantisers cannot run on the meta device); the tiny
# and fmnist joint spaces cover the same code
_SLOW = {"quant_ofa_mbv3", "quant_ofa_mbv3_w12"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in SPACES.names()])
def test_registered_space_sweep(name: str) -> None:
    check_space(create_space(name), n=2)


def test_every_registered_space_parses_its_arch_ids() -> None:
    """Ids parse without any results file: ``from_id`` is on every built-in space (the sweep checks it inverts)."""
    for name in SPACES.names():
        assert has_capability(create_space(name), "from_id"), name
    space = create_space("ofa_mbv3_fmnist", expands=(2, 2.5, 4))  # a fractional expand ratio in the id
    check_ids(space, n=50)
    assert "e2.5" in "".join(space.arch_id(space.sample(s)) for s in range(20))


def test_every_registered_space_is_priced_by_macs_and_params() -> None:
    for name in SPACES.names():
        space = create_space(name)
        archs = [space.sample(np.random.default_rng(0)) for _ in range(3)]
        for cost in ("macs", "params"):
            got = create_hw_profile(cost).evaluate_many(space, archs).values
            np.testing.assert_array_equal(got, [getattr(space, cost)(a) for a in archs])


def test_a_space_without_layers_is_a_named_missing_capability() -> None:
    space = BareSpace()
    check_space(space, export=False)
    with pytest.raises(MissingCapabilityError, match=r"'bare' does not implement the 'layers' capability"):
        create_hw_profile("snapdragon855").evaluate_many(space, [space.sample(0)])
    with pytest.raises(MissingCapabilityError, match="'bare'.*'layers'"):
        create_hw_profile("macs").evaluate_encoded(space, np.zeros((1, 1)))


def test_bitops_depend_on_bits_and_macs_do_not() -> None:
    space = create_space("quant_ofa_mbv3_fmnist")
    arch = space.base.max_arch()
    w8, w3 = space.policy_for(arch, 8, 8), space.policy_for(arch, 3, 3)
    assert space.macs(w8) == space.macs(w3)
    bitops = create_hw_profile("bitops")
    hi, lo = bitops.evaluate_many(space, [w8, w3]).values
    assert hi == space.bitops(w8) and lo == space.bitops(w3) and lo < hi / 4
