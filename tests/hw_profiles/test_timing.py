"""Timing guidance on a shared machine (hw_profiles.timing) and its use by the builder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from hw_profiles.backends import TimingBackend
from hw_profiles.builder import MeasureConfig, build_profile
from hw_profiles.timing import (
    NoisyTimingWarning,
    pass_spread,
    plan_runs,
    run_spread,
    timing_advice,
    warn_if_noisy,
    warn_if_unsteady,
)
from search_spaces import create_space


def test_plan_runs_follows_the_measured_variance() -> None:
    rng = np.random.default_rng(0)
    cold = [5.0, 3.0, 2.0, 1.6]  # first runs slow (caches, allocator), then steady around 1 ms
    quiet = plan_runs(cold + list(rng.normal(1.0, 0.005, 40)))
    noisy = plan_runs(cold + list(rng.normal(1.0, 0.08, 40)))
    assert quiet.warmup >= 4 and noisy.warmup >= 4
    assert quiet.repeats == 5 and noisy.repeats > 40 and noisy.cv > 5 * quiet.cv
    # n chosen so that the median's standard error is 1%: 1.2533 * cv / sqrt(n) ~ 0.01
    assert 1.2533 * noisy.cv / np.sqrt(noisy.repeats) == pytest.approx(0.01, rel=0.1)
    with pytest.raises(ValueError, match="pilot"):
        plan_runs([1.0, -1.0, 1.0, 1.0])


def test_spread_warning_names_the_spread_and_load() -> None:
    times = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.5, 0.8, 1.3]])
    assert run_spread(times[:1]) == 0.0 and run_spread(times) > 0.1
    with pytest.warns(NoisyTimingWarning, match=r"spread 30%.*load average"):
        assert warn_if_noisy(0.3, what="test")
    assert not warn_if_noisy(0.05)
    advice = timing_advice(0.3, threads=1, clock="wall", pinned=False)
    assert any("taskset" in a for a in advice) and any("clock=cpu" in a for a in advice)
    assert timing_advice(0.01, threads=1, clock="cpu", pinned=True) == []


def test_pass_to_pass_spread_flags_a_machine_that_changed_speed_between_passes() -> None:
    # steady runs within each pass, but the second network ran at half speed in one of its three passes
    steady, halved = [1.0, 1.02, 0.99], [2.0, 4.0, 2.02]
    assert pass_spread([steady]) == pytest.approx(0.03)
    assert pass_spread([steady, halved, halved]) == pytest.approx(2 / 2.02)  # median over networks
    assert pass_spread([[1.0], [2.0]]) is None  # one pass: nothing to compare
    with pytest.warns(NoisyTimingWarning, match=r"ran 99% apart from one pass to the next.*load average"):
        assert warn_if_unsteady(0.99, what="test")
    assert not warn_if_unsteady(0.05) and not warn_if_unsteady(None)


def _busy(ms: float) -> None:
    end = time.thread_time_ns() + int(ms * 1e6)
    while time.thread_time_ns() < end:
        pass


class SteadyBackend(TimingBackend):
    name = "steady"

    @property
    def version(self) -> str:
        return "steady 1"

    def prepare(self, module, shape):
        return lambda: _busy(0.05)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU pinning on this OS")
def test_builder_pins_plans_and_records_the_spread(tmp_path: Path) -> None:
    space = create_space("ofa_mbv3_tiny", resolutions=(28,))
    before = os.sched_getaffinity(0)
    config = MeasureConfig(warmup=0, repeats=3, chunk=96, clock="cpu", pin=True, adaptive=True, calibration_nets=0)
    result = build_profile(space, tmp_path / "p.json", build_layer=lambda s: s.key(),
                           build_network=lambda layers: ("net", len(layers)), config=config, backend=SteadyBackend())
    assert os.sched_getaffinity(0) == before  # pinning is undone after the build
    prov = result.profile.meta.provenance
    plan = prov["timing_plan"]
    assert plan["repeats"] >= 5 and plan["warmup"] >= 1
    assert {e.count for e in result.profile.entries.values()} == {max(3, plan["repeats"])}
    assert prov["timing"]["pinned"] is True and prov["timing"]["spread"] >= 0
    assert "chosen from a pilot" in result.profile.meta.method
