"""The fallback for unmeasured layers (hw_profiles.opmodel): op-feature model, held-out validation, stored in the
profile, counted in search summaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hw_profiles import HardwareProfile
from hw_profiles.features import FEATURE_NAMES, feature_matrix
from hw_profiles.latency import LatencyModel
from hw_profiles.opmodel import (
    NeighbourModel,
    OpFeatureModel,
    fallback_from_dict,
    fit_fallback,
    fit_op_model,
    heldout_validation,
    stored_fallback,
    with_fallback,
)
from hw_profiles.pricing import space_layer_specs
from hw_profiles.profile import Entry, ProfileMeta
from search_spaces import create_space

SHARED = np.array([2.0, 1.0, 3.0, 0.5, 0.2, 0.4, 0.3, 0.002])
MBCONV_EXTRA = np.array([3.0, 0.0, 6.0, 1.0, 0.0, 0.0, 0.0, 0.004])  # mbconv pays more per MAC and per launch


def _truth(specs) -> np.ndarray:
    a = feature_matrix(specs)
    coef = np.array([SHARED + (MBCONV_EXTRA if s.op == "mbconv" else 0) for s in specs])
    return (a * coef).sum(axis=1)


def _meta() -> ProfileMeta:
    return ProfileMeta(name="local_cpu", device="test cpu", soc=None, runtime="torch", runtime_version="torch x",
                       threads=1, batch=1, units="ms", method="synthetic")


def test_op_feature_model_generalises_to_held_out_sizes_and_widths() -> None:
    specs = space_layer_specs(create_space("ofa_mbv3_tiny"))
    y = _truth(specs)
    model, checks = fit_fallback(specs, y)
    assert checks["chosen"] == "op_features" and isinstance(model, OpFeatureModel)
    op = checks["op_features"]
    assert op["op"] == "mbconv" and len(op["resolution"]["per_value"]) >= 4 and len(op["width"]["per_value"]) >= 2
    assert op["resolution"]["within10"] >= 0.95 and op["width"]["within10"] >= 0.95 and op["rmspe"] < 0.03
    assert checks["linear"]["rmspe"] > op["rmspe"]  # one shared set of coefficients cannot express the op types
    assert model.rel_error == pytest.approx(op["rmspe"])
    assert OpFeatureModel.from_dict(model.to_dict()) == model
    with pytest.raises(ValueError, match="coefficients"):
        OpFeatureModel(shared=(1.0,) * len(FEATURE_NAMES), per_op={"mbconv": (-1.0,) * len(FEATURE_NAMES)},
                       floor=0.1, rel_error=0.1)


def test_per_channel_overheads_are_learnt_and_generalise() -> None:
    """Eager kernels pay fixed work per channel that MACs and bytes miss: a table with such a term is priced within
    +-10 % on held-out sizes and widths only by the candidate with channel terms, which the fit then chooses."""
    specs = space_layer_specs(create_space("ofa_mbv3_tiny"))
    per_channel = np.array([4e-4 * s.mid_c + 6e-4 * s.out_c for s in specs])  # ms: 0.4 us per middle channel, ...
    y = _truth(specs) + per_channel
    assert np.median(per_channel / y) > 0.1  # the term matters
    model, checks = fit_fallback(specs, y)
    assert checks["chosen"] == "op_channels" and model.channel_terms
    assert checks["op_channels"]["within10"] >= 0.95 and checks["op_channels"]["rmspe"] < 0.03
    assert checks["op_features"]["rmspe"] > 1.5 * checks["op_channels"]["rmspe"]
    assert model.feature_names()[-2:] == ["mid_kch", "out_kch"]
    restored = OpFeatureModel.from_dict(model.to_dict())
    assert restored == model and np.allclose(restored.predict(specs), model.predict(specs))
    # a model stored before the channel terms existed (no 'channel_terms' key) still loads and prices as before
    plain = fit_op_model(specs, _truth(specs))
    old = {k: v for k, v in plain.to_dict().items() if k != "channel_terms"}
    assert np.allclose(OpFeatureModel.from_dict(old).predict(specs), plain.predict(specs))
    with pytest.raises(ValueError, match="refit it"):
        OpFeatureModel.from_dict({**model.to_dict(), "channel_terms": False})


def test_robust_fit_ignores_a_layer_that_jumped_to_another_kernel() -> None:
    specs = space_layer_specs(create_space("ofa_mbv3_tiny"))
    y = _truth(specs)
    jumped = y.copy()
    jumped[np.argmax(y)] *= 4.0  # one layer 4x slower (another algorithm or cache regime)
    others = np.arange(len(y)) != np.argmax(y)
    robust = fit_op_model(specs, jumped)
    plain = fit_op_model(specs, jumped, robust_iters=1)
    err = lambda m: np.abs(m.predict(specs)[others] / y[others] - 1)  # noqa: E731
    assert np.median(err(robust)) < 0.01 and np.median(err(plain)) > np.median(err(robust))


def test_heldout_validation_reports_extrapolation_error_of_a_bad_model() -> None:
    specs = space_layer_specs(create_space("ofa_mbv3_tiny"))
    y = _truth(specs)

    class Mean:  # predicts the training mean: must look bad on held-out groups
        def __init__(self, s, t):
            self.m = float(np.mean(t))

        def predict(self, s):
            return np.full(len(s), self.m)

    check = heldout_validation(specs, y, Mean)
    assert check["within10"] < 0.3 and check["rmspe"] > 0.3


@pytest.mark.filterwarnings("ignore::hw_profiles.domain.OutOfDomainWarning")  # r=32 is outside the table: known
def test_profile_stores_the_validated_fallback_and_searches_count_its_layers(tmp_path: Path) -> None:
    space = create_space("ofa_mbv3_tiny")
    seen = space_layer_specs(space, (28,))  # the table never measured r=32
    profile = HardwareProfile(_meta(), {s.key(): Entry(mean=float(v), median=float(v)) for s, v in
                                        zip(seen, _truth(seen))})
    path = with_fallback(profile).save(tmp_path / "p.json")
    loaded = HardwareProfile.load(path)
    doc = loaded.meta.provenance["fallback"]
    assert doc["n_entries"] == len(seen) and doc["validation"]["chosen"] in ("linear", "op_features")
    assert stored_fallback(loaded).to_dict() == doc["model"]
    model = LatencyModel.from_profile(loaded)
    assert model.fallback.to_dict() == doc["model"]  # the stored, validated model prices unmeasured layers
    archs = [create_space("ofa_mbv3_tiny", resolutions=(32,)).sample(s) for s in range(8)]
    batch = model.evaluate_many(space, archs)
    truth = np.array([_truth(space.layers(a)).sum() for a in archs])
    assert np.all(np.abs(batch.values / truth - 1) < 0.1)
    assert batch.n_modelled.sum() > 0 and model.fallback_layers == batch.n_modelled.sum()
    assert f"{model.fallback_layers} layers of 8 architectures priced by the" in model.pricing_note()
    # an entry added after the fit makes the stored model stale: it is refitted, not reused
    extra = next(s for s in space_layer_specs(space, (32,)) if s.key() not in loaded.entries)
    assert stored_fallback(loaded.with_entries({extra.key(): Entry(mean=1.0)})) is None


@pytest.mark.filterwarnings("ignore::hw_profiles.domain.OutOfDomainWarning")
def test_hw_objective_note_reaches_the_search_summary(tmp_path: Path) -> None:
    from nas.search.objectives import hw_objective

    space = create_space("ofa_mbv3_tiny")
    seen = space_layer_specs(space, (28,))
    profile = with_fallback(HardwareProfile(_meta(), {s.key(): Entry(mean=float(v)) for s, v in
                                                      zip(seen, _truth(seen))}))
    obj = hw_objective(space, profile=LatencyModel.from_profile(profile))
    obj([space.sample(s) for s in range(5)])
    assert obj.note is not None and "architectures priced by the" in obj.note()


def test_neighbour_correction_carries_a_blocks_own_cost_to_sizes_and_widths_it_was_not_measured_at() -> None:
    """A runtime that tiles some channel counts badly: each (in, out channels) family costs its own factor beyond
    what MACs and bytes say, at every size and width. No op-feature model can express that; the neighbour-corrected
    one carries the factor over from the same block measured at another size or width, and the fit chooses it."""
    specs = space_layer_specs(create_space("ofa_mbv3_tiny"))
    rng = np.random.default_rng(0)
    fams = sorted({(s.op, s.in_c, s.out_c) for s in specs})
    factor = dict(zip(fams, np.exp(rng.normal(0, 0.25, len(fams)))))
    y = _truth(specs) * np.array([factor[(s.op, s.in_c, s.out_c)] for s in specs])
    model, checks = fit_fallback(specs, y)
    assert checks["chosen"] == "neighbours" and isinstance(model, NeighbourModel)
    nb, op = checks["neighbours"], checks["op_channels"]
    assert nb["within10"] >= op["within10"] + 0.3 and nb["rmspe"] < 0.8 * op["rmspe"]  # 0.69 vs 0.21 here
    assert model.rel_error == pytest.approx(nb["rmspe"])
    restored = fallback_from_dict(model.to_dict())
    assert isinstance(restored, NeighbourModel) and np.allclose(restored.predict(specs), model.predict(specs))
    # with no measured layer of its kind, a layer is priced by the op-feature model alone (the correction is 0)
    lone = [s for s in specs if s.op == "mbconv"][:1]
    alone = NeighbourModel.fit([s for s in specs if s.op != "mbconv"] + lone, np.r_[y[[s.op != "mbconv" for s in
                                                                                      specs]], 1.0])
    other = [s for s in specs if s.op == "mbconv" and s.kernel != lone[0].kernel][:3]
    assert np.allclose(alone.predict(other), alone.base.predict(other))
    with pytest.raises(ValueError, match="must match"):
        NeighbourModel.from_dict({**model.to_dict(), "residuals": [0.0]})
