"""Network-level calibration (hw_profiles.calibration): fit selection, storage in the profile, applied when pricing."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hw_profiles import HardwareProfile, ProfileFormatError, create_hw_profile
from hw_profiles.backends import TimingBackend
from hw_profiles.builder import MeasureConfig, build_profile
from hw_profiles.calibration import NetworkCalibration, calibration_archs, fit_calibration, op_sums
from hw_profiles.latency import LatencyModel
from search_spaces import create_space
from search_spaces.errors import BadInputError
from search_spaces.layers import layer_macs
from supernets.static import build_layer, build_network


def _sums(rng: np.random.Generator, n: int) -> list[dict[str, float]]:
    return [{"conv": float(rng.uniform(0.5, 1)), "mbconv": float(rng.uniform(2, 12)),
             "linear": float(rng.uniform(0.1, 0.3))} for _ in range(n)]


@pytest.mark.parametrize("truth", ["scale", "affine", "per_op"])
def test_fit_chooses_the_map_that_generated_the_times(truth: str) -> None:
    rng = np.random.default_rng(0)
    sums = _sums(rng, 10)
    k_op = {"conv": 2.0, "mbconv": 0.7, "linear": 3.0}
    if truth == "scale":
        t = [0.8 * sum(s.values()) + 0.05 for s in sums]
    elif truth == "affine":
        t = [0.8 * sum(s.values()) + 3.0 for s in sums]
    else:
        t = [sum(k_op[o] * v for o, v in s.items()) + 0.05 for s in sums]
    t = np.array(t) * rng.normal(1, 0.002, len(t))  # timing noise well below every model difference
    cal = fit_calibration(sums, t, overhead=0.05)
    assert cal.kind == truth
    assert cal.rmspe < 0.01 and np.max(np.abs(cal.residuals)) < 0.01
    assert set(cal.heldout) == {"scale", "affine", "per_op"}
    if truth == "affine":
        assert cal.scale == pytest.approx(0.8, rel=0.02) and cal.offset == pytest.approx(3.0, rel=0.05)
    fresh = _sums(np.random.default_rng(1), 5)  # networks the fit never saw
    expected = {"scale": [0.8 * sum(s.values()) + 0.05 for s in fresh],
                "affine": [0.8 * sum(s.values()) + 3.0 for s in fresh],
                "per_op": [sum(k_op[o] * v for o, v in s.items()) + 0.05 for s in fresh]}[truth]
    assert cal.predict(fresh) == pytest.approx(expected, rel=0.02)
    assert NetworkCalibration.from_dict(cal.to_dict()) == cal


def test_few_networks_fall_back_to_one_scale_and_bad_input_is_named() -> None:
    cal = fit_calibration([{"conv": 1.0}, {"conv": 2.0}], [1.5, 3.0])
    assert cal.kind == "scale" and cal.scale == pytest.approx(1.5) and cal.heldout == {}
    with pytest.raises(ValueError, match="positive"):
        fit_calibration([{"conv": 1.0}], [-1.0])
    with pytest.raises(ValueError, match="kind"):
        NetworkCalibration.from_dict({"kind": "magic", "scale": 1.0, "offset": 0.0})


def test_calibration_archs_span_the_space() -> None:
    space = create_space("ofa_mbv3_tiny", resolutions=(28,))
    archs = calibration_archs(space, 5, 0)
    macs = [sum(layer_macs(s) for s in space.layers(a)) for a in archs]  # smallest, middle, largest, then random
    assert len(archs) == 5 and macs[0] == min(macs) and macs[2] == max(macs) and macs[0] < macs[1] < macs[2]


def _busy(ms: float) -> None:
    end = time.thread_time_ns() + int(ms * 1e6)
    while time.thread_time_ns() < end:
        pass


class AffineBackend(TimingBackend):
    """Layers 0.2 ms alone; a network of n layers 0.25 ms per layer plus a fixed 1.5 ms (thread CPU time)."""

    name = "affine"

    @property
    def version(self) -> str:
        return "affine 1"

    def prepare(self, module, shape):
        cost = 0.25 * module[1] + 1.5 if isinstance(module, tuple) else 0.2
        return lambda: _busy(cost)


def test_builder_stores_the_fit_and_pricing_applies_it(tmp_path: Path) -> None:
    space = create_space("ofa_mbv3_tiny", resolutions=(28,))
    config = MeasureConfig(warmup=0, repeats=3, chunk=96, context=False, normalise=False, calibration_nets=6,
                           clock="cpu")
    result = build_profile(space, tmp_path / "a.json", build_layer=lambda s: s.key(),
                           build_network=lambda layers: ("net", len(layers)), config=config, backend=AffineBackend())
    cal = NetworkCalibration.from_dict(result.profile.meta.calibration)
    assert cal.kind == "affine" and len(cal.networks) == 6
    assert cal.scale == pytest.approx(1.25, rel=0.1) and cal.offset == pytest.approx(1.5, rel=0.2)
    assert {"runtime", "threads", "batch", "clock", "cpu_model", "loadavg", "spread"} <= set(cal.conditions)
    loaded = HardwareProfile.load(result.path)  # round trip through the file
    assert loaded.meta.calibration == result.profile.meta.calibration
    model = create_hw_profile("lut", path=result.path)
    for arch in [space.sample(s) for s in range(10, 15)]:  # networks the calibration never timed
        n = len(space.layers(arch))
        assert model.evaluate(space, arch).value == pytest.approx(0.25 * n + 1.5, rel=0.1)
        assert model.evaluate(space, arch).value > 1.1 * 0.2 * n  # the uncalibrated sum is far below
    bad = result.profile.to_dict()
    bad["meta"]["calibration"]["offset"] = -1.0
    with pytest.raises(ProfileFormatError, match="offset"):
        HardwareProfile.from_dict(bad)


def test_real_timing_calibration_on_by_default_is_applied(tmp_path: Path) -> None:
    space = create_space("ofa_mbv3_tiny", resolutions=(28,))
    config = MeasureConfig(warmup=1, repeats=3, chunk=96, clock="cpu")  # defaults: context, normalise, calibration
    assert config.calibration_nets > 0
    result = build_profile(space, tmp_path / "t.json", build_layer=build_layer, build_network=build_network,
                           config=config)
    meta = HardwareProfile.load(result.path).meta
    cal = NetworkCalibration.from_dict(meta.calibration)
    assert cal.conditions["runtime"] == "torch" and cal.conditions["threads"] == 1 and cal.conditions["batch"] == 1
    assert cal.conditions["process"] == "fresh"  # timed in spawned interpreters, as a user's process meets them
    assert cal.conditions["processes"] == 3 and len(cal.conditions["process_levels"]) == 3
    # how far the same networks ran apart between the processes (a machine that changed speed warns)
    assert 0 <= cal.conditions["process_spread"] < 1
    assert len(cal.networks) == config.calibration_nets and cal.kind in ("scale", "affine", "per_op")
    model = LatencyModel.from_profile(HardwareProfile.load(result.path))
    prof = result.profile
    archs = calibration_archs(space, config.calibration_nets, [config.seed, 1])
    for arch, net in zip(archs, cal.networks):
        layers = space.layers(arch)
        sums = op_sums(layers, [prof.entries[s.key()].value for s in layers])
        assert sum(sums.values()) == pytest.approx(net["sum"], rel=1e-3)
        priced = model.evaluate(space, arch).value
        assert priced == pytest.approx(cal.predict([sums])[0], rel=1e-9)  # the stored fit is what pricing applies
    # stored residuals are the fit's own: (prediction - measured) / measured on the calibration networks
    measured = np.array([n["measured"] for n in cal.networks])
    pred = np.array([model.evaluate(space, a).value for a in archs])
    assert np.allclose((pred - measured) / measured, cal.residuals, atol=1e-3)


def test_calibration_in_the_builder_process_on_request_and_bad_value_refused(tmp_path: Path) -> None:
    space = create_space("ofa_mbv3_tiny", resolutions=(28,))
    config = MeasureConfig(warmup=1, repeats=3, chunk=96, clock="cpu", calibration_nets=3,
                           calibration_process="builder")
    result = build_profile(space, tmp_path / "b.json", build_layer=build_layer, build_network=build_network,
                           config=config)
    cal = NetworkCalibration.from_dict(HardwareProfile.load(result.path).meta.calibration)
    assert cal.conditions["process"] == "builder" and len(cal.networks) == 3
    assert all(n["measured"] > 0 for n in cal.networks)
    with pytest.raises(BadInputError, match="calibration_process must be 'fresh' or 'builder'"):
        MeasureConfig(calibration_process="elsewhere")


class _ParamCost(TimingBackend):
    """Every module costs thread CPU time in proportion to its parameters, divided by the machine's ``speed``: a
    machine at half speed without the timing noise of a shared one (CPU time busy-waited is not stretched by
    other tenants, so the test does not depend on this machine's load)."""

    name = "param_cost"

    def __init__(self, speed: float = 1.0) -> None:
        super().__init__(1)
        self.speed = speed

    @property
    def version(self) -> str:
        return "param_cost 1"

    def prepare(self, module, shape):
        cost = (0.02 + 2e-6 * sum(p.numel() for p in module.parameters())) / self.speed
        return lambda: _busy(cost)


def test_recalibrate_prices_an_existing_table_at_the_machines_speed_now(tmp_path: Path) -> None:
    space = create_space("ofa_mbv3_tiny", resolutions=(28,))
    config = MeasureConfig(warmup=1, repeats=3, chunk=96, clock="cpu", calibration_nets=4,
                           calibration_process="builder")
    path = tmp_path / "r.json"
    first = build_profile(space, path, build_layer=build_layer, build_network=build_network, config=config,
                          backend=_ParamCost(1.0))
    archs = [space.sample(np.random.default_rng(s)) for s in range(5)]
    before = LatencyModel.from_profile(HardwareProfile.load(path)).evaluate_many(space, archs).values
    # the machine halves its speed: a plain resume measures nothing and keeps the old prices ...
    again = build_profile(space, path, build_layer=build_layer, build_network=build_network, config=config,
                          backend=_ParamCost(0.5))
    assert again.measured == () and again.level_change is None
    assert HardwareProfile.load(path).meta.calibration == first.profile.meta.calibration
    # ... recalibrate re-times only the calibration networks and moves every price with the machine
    slow = build_profile(space, path, build_layer=build_layer, build_network=build_network, config=config,
                         backend=_ParamCost(0.5), recalibrate=True)
    saved = HardwareProfile.load(path)
    assert slow.measured == () and saved.entries == first.profile.entries  # no layer measured again
    assert slow.level_change is not None and 1.6 < slow.level_change < 2.5
    # the reported change is the stored calibration networks' own: each re-timed net against its earlier time
    old = {str(n["arch"]): n["measured"] for n in first.profile.meta.calibration["networks"]}
    new = {str(n["arch"]): n["measured"] for n in saved.meta.calibration["networks"]}
    assert old.keys() == new.keys() and len(new) == config.calibration_nets
    assert slow.level_change == pytest.approx(float(np.exp(np.mean([np.log(new[k] / old[k]) for k in new]))))
    after = LatencyModel.from_profile(saved).evaluate_many(space, archs).values
    assert np.all((after / before > 1.5) & (after / before < 2.6))
    assert [r["level_change"] for r in saved.meta.provenance["recalibrations"]] == [slow.level_change]
    with pytest.raises(BadInputError, match="recalibrate re-times the calibration networks"):
        build_profile(space, path, build_layer=build_layer, build_network=build_network,
                      config=replace(config, calibration_nets=0), recalibrate=True)
