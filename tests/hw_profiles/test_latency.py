"""Latency and analytic cost models: additive sums, fallback reporting, fast population pricing, snapdragon855."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from hw_profiles import (
    HW_PROFILES,
    Entry,
    LatencyModel,
    LinearCostModel,
    MissingEntryError,
    ProfileMeta,
    create_hw_profile,
    fit_linear_cost,
    space_layer_specs,
)
from hw_profiles.pricing import LayerwisePricer, TabulatedPricer
from hw_profiles.registry import SNAPDRAGON855_MODEL
from search_spaces import create_space
from search_spaces.registry import UnknownNameError

META = ProfileMeta(name="synthetic", device="none", soc=None, runtime="test", runtime_version=None, threads=1,
                   batch=1, units="ms", method="synthetic values")


def _table(space, archs) -> dict[str, Entry]:
    """Distinct, arbitrary positive values for every layer of ``archs`` (and a fallback-fit set of layers)."""
    keys = sorted({s.key() for a in archs for s in space.layers(a)})
    return {k: Entry(mean=0.05 + (i * 37 % 101) / 50, std=0.01, count=4) for i, k in enumerate(keys)}


def test_additive_sum_equals_hand_computed_sum() -> None:
    space = create_space("ofa_mbv3")
    arch = space.sample(7)
    table = _table(space, [arch])
    model = LatencyModel(META, table)
    report = model.evaluate(space, arch)
    layers = space.layers(arch)
    hand = sum(table[s.key()].mean for s in layers)
    assert report.value == pytest.approx(hand, rel=1e-12)
    assert len(report.layers) == len(layers) == 2 + sum(arch.d) + 4  # stem, first block, blocks, head
    assert report.extrapolated == ()
    assert report.error == pytest.approx(np.sqrt(sum((0.01 / 2) ** 2 for _ in layers)))
    assert model.evaluate_many(space, [arch]).values[0] == pytest.approx(hand, rel=1e-12)
    assert model.evaluate_encoded(space, space.encode(arch)[None]).values[0] == pytest.approx(hand, rel=1e-12)


def test_fallback_used_and_reported_exactly_for_missing_keys() -> None:
    space = create_space("ofa_mbv3")
    rng = np.random.default_rng(1)
    others = [space.sample(rng) for _ in range(30)]
    arch = space.sample(rng)
    table = _table(space, others + [arch])
    layers = space.layers(arch)
    missing = [layers[3].key(), layers[5].key(), layers[-2].key()]
    for k in missing:
        table.pop(k)
    fitted = fit_linear_cost([s for s in space_layer_specs(space, (224,))][:50], np.linspace(0.1, 3.0, 50))
    model = LatencyModel(META, table, fitted)
    report = model.evaluate(space, arch)
    assert set(report.extrapolated) == set(missing)
    by_key = {c.key: c for c in report.layers}
    for spec in layers:
        c = by_key[spec.key()]
        if spec.key() in missing:
            pred = fitted.predict([spec])[0]
            assert c.source == "model" and c.value == pytest.approx(pred) and c.value > 0
            assert c.error == pytest.approx(pred * fitted.rel_error)
        else:
            assert c.source == "table" and c.value == table[spec.key()].mean
    assert model.evaluate_many(space, [arch]).n_modelled[0] == 3
    assert "3/" in str(report) and "extrapolated" in str(report)


def test_missing_key_without_fallback_is_an_error_not_zero() -> None:
    space = create_space("ofa_mbv3_tiny")
    arch = space.sample(0)
    with pytest.raises(MissingEntryError, match="not in profile 'synthetic'"):
        LatencyModel(META, {}).evaluate(space, arch)


def test_fallback_never_prices_zero() -> None:
    space = create_space("ofa_mbv3_tiny")
    specs = space.layers(space.sample(0))
    zero = LinearCostModel(coef=(0.0,) * 8, floor=0.003, rel_error=0.1)
    assert np.all(zero.predict(specs) == 0.003)
    with pytest.raises(ValueError, match="coefficients must be finite and >= 0"):
        LinearCostModel(coef=(-1.0,) + (0.0,) * 7, floor=0.1, rel_error=0.1)


def test_nnls_fit_recovers_a_linear_truth() -> None:
    space = create_space("ofa_mbv3")
    specs = space_layer_specs(space, (160, 224))
    truth = LinearCostModel(coef=(0.05, 0.06, 0.2, 0.07, 0.1, 0.5, 1.4, 0.002), floor=1e-4, rel_error=0.0)
    fitted = fit_linear_cost(specs, truth.predict(specs))
    assert np.allclose(fitted.coef, truth.coef, rtol=1e-6, atol=1e-9)
    assert fitted.info["cv_rmspe"] < 1e-6


@pytest.mark.parametrize("space_name", ["ofa_mbv3", "ofa_mbv3_w12", "ofa_mbv3_tiny"])
def test_tabulated_pricer_equals_layerwise(space_name: str) -> None:
    space = create_space(space_name)
    model = create_hw_profile("snapdragon855")
    assert isinstance(model.pricer(space), TabulatedPricer)
    rng = np.random.default_rng(2)
    archs = [space.sample(rng) for _ in range(60)]
    fast = model.evaluate_many(space, archs)
    slow = LayerwisePricer(space, model.price_layers).price_archs(archs)
    assert np.allclose(fast.values, slow.values, rtol=1e-12)
    assert np.allclose(fast.errors, slow.errors, rtol=1e-12)
    assert np.array_equal(fast.n_modelled, slow.n_modelled)


def test_population_pricing_is_fast() -> None:
    """The search prices 100 x 500 architectures; latency must not be its bottleneck."""
    space = create_space("ofa_mbv3")
    model = create_hw_profile("snapdragon855")
    model.evaluate_many(space, [space.sample(0)])  # builds the tables once
    x = np.stack([space.encode(space.sample(s)) for s in range(100)])
    t0 = time.perf_counter()
    for _ in range(500):
        model.evaluate_encoded(space, x)
    assert time.perf_counter() - t0 < 5.0  # about 0.1 s on an idle core; generous for a shared machine


def test_analytic_profiles_match_space_formulas() -> None:
    space = create_space("ofa_mbv3")
    archs = [space.sample(s) for s in range(10)]
    macs, params = np.array([space.macs(a) for a in archs]), np.array([space.params(a) for a in archs])
    assert np.array_equal(create_hw_profile("macs")(space, archs), macs)
    assert np.array_equal(create_hw_profile("flops")(space, archs), 2 * macs)
    assert np.array_equal(create_hw_profile("params")(space, archs), params)
    assert np.allclose(create_hw_profile("size")(space, archs), params * 4 / 1e6)
    report = create_hw_profile("macs").evaluate(space, archs[0])
    assert report.error == 0 and report.extrapolated == () and {c.source for c in report.layers} == {"exact"}


def test_registry_names_and_errors(tmp_path: Path) -> None:
    assert {"snapdragon855", "local_cpu", "lut", "macs", "flops", "params", "size"} <= set(HW_PROFILES.names())
    with pytest.raises(UnknownNameError, match="snapdragon855"):
        create_hw_profile("snapdragon885")
    with pytest.raises(FileNotFoundError, match="nas.profile hw=local_cpu"):
        create_hw_profile("local_cpu", path=tmp_path / "none.json")


def test_shipped_snapdragon855_model_has_provenance_and_measured_error() -> None:
    doc = json.loads(SNAPDRAGON855_MODEL.read_text())
    assert doc["meta"]["provenance"]["source_commit"] == "a7c9bcd525e17404968bc55aa43772bf7e51909e"
    assert doc["validation"]["block_within10_min"] >= 0.98
    model = create_hw_profile("snapdragon855")
    assert model.name == "latency@snapdragon855" and model.units == "ms"
    space = create_space("ofa_mbv3")  # w1.0: never measured on the phone, priced by the calibrated model only
    report = model.evaluate(space, space.sample(0))
    assert len(report.extrapolated) == len(report.layers) and 5 < report.value < 100 and report.error > 0


def test_snapdragon855_with_tables_is_exact_where_keys_match(yardsticks: Path) -> None:
    from hw_profiles.fit_snapdragon import read_resolution_tables

    directory = yardsticks / "ofa_note10_lut"
    tables = read_resolution_tables(directory)
    space = create_space("ofa_mbv3_w12", resolutions=(160, 176, 192, 208, 224))
    exact = create_hw_profile("snapdragon855", tables=directory)
    calibrated = create_hw_profile("snapdragon855")
    rng = np.random.default_rng(3)
    archs = [space.sample(rng) for _ in range(100)]
    truth = np.array([sum(tables[a.r][s.key()].mean for s in space.layers(a)) for a in archs])
    with_tables = exact.evaluate_many(space, archs)
    assert with_tables.n_modelled.max() == 0
    # keys shared by two resolutions (e.g. 6x6 blocks at 176 and 192) get the pooled mean: tiny differences
    assert np.allclose(with_tables.values, truth, rtol=0.01)
    rel = calibrated(space, archs) / truth - 1
    assert np.mean(np.abs(rel) <= 0.05) >= 0.95


def test_shipped_coefficients_are_reproducible(yardsticks: Path) -> None:
    from hw_profiles.fit_snapdragon import fit_snapdragon855, read_resolution_tables

    model, validation = fit_snapdragon855(read_resolution_tables(yardsticks / "ofa_note10_lut"))
    shipped = json.loads(SNAPDRAGON855_MODEL.read_text())
    assert np.allclose(model.coef, shipped["model"]["coef"], rtol=1e-9)
    assert validation["block_within10_min"] == shipped["validation"]["block_within10_min"]
