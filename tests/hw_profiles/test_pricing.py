"""The one tabulated pricer: equal to the two OFA pricers it replaced, and to per-architecture layer sums."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hw_profiles import TabulatedPricer, create_hw_profile
from hw_profiles.pricing import LayerwisePricer
from nas.search.encoded import EncodedView
from search_spaces import create_space

# 1,000 seeded random OFA-MBv3 encodings and their MACs, params and snapdragon855 latency (value and error) as
# priced by main at b2a8e87 (hw_profiles.pricing.OFAMobileNetV3Pricer), frozen before that pricer was deleted.
GOLDEN = Path(__file__).parent / "data" / "ofa_mbv3_old_pricer.npz"


@pytest.mark.parametrize("profile", ["macs", "params", "snapdragon855"])
def test_pricer_equals_the_old_ofa_figures_on_1000_archs(profile: str) -> None:
    golden = np.load(GOLDEN)
    space, X = create_space("ofa_mbv3"), golden["X"].astype(np.int64)
    assert X.shape == (1000, len(space.genes()))
    model = create_hw_profile(profile)
    assert isinstance(model.pricer(space), TabulatedPricer)
    got = model.evaluate_encoded(space, X)
    np.testing.assert_allclose(got.values, golden[profile], rtol=1e-12, atol=0)
    np.testing.assert_allclose(got.errors, golden[f"{profile}_err"], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("space_name", ["nb201", "nb201_tiny", "vit_tiny", "vit_small", "ofa_mbv3_fmnist"])
@pytest.mark.parametrize("profile", ["macs", "params"])
def test_tabulated_equals_layerwise_and_space_totals(space_name: str, profile: str) -> None:
    space = create_space(space_name)
    model = create_hw_profile(profile)
    X = EncodedView(space).sample(200, np.random.default_rng(3))
    archs = [space.decode(x) for x in X]
    fast = model.evaluate_encoded(space, X).values
    slow = LayerwisePricer(space, model.price_layers).price_archs(archs).values
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(fast, [getattr(space, profile)(a) for a in archs])


def test_non_canonical_rows_price_as_their_canonical_arch() -> None:
    """Genes of inactive blocks do not change the price (the table reads the depth gene)."""
    space = create_space("vit_tiny")
    view = EncodedView(space)
    X = np.random.default_rng(0).integers(0, view.sizes, size=(300, view.n_genes))
    model = create_hw_profile("macs")
    np.testing.assert_array_equal(model.evaluate_encoded(space, X).values,
                                  model.evaluate_encoded(space, view.canonical(X)).values)


def test_out_of_range_encoding_is_a_named_error() -> None:
    space = create_space("nb201")
    x = np.zeros((1, 6), dtype=np.int64)
    x[0, 2] = 5
    with pytest.raises(ValueError, match="out of range"):
        create_hw_profile("macs").evaluate_encoded(space, x)
