"""Domains of latency models and measured tables: out-of-domain pricing warns once, strict refuses, an op no
table or model covers is a named error (never priced as zero)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from hw_profiles import Entry, HardwareProfile, LatencyModel, ProfileMeta, create_hw_profile
from hw_profiles.domain import Domain, OutOfDomainError, OutOfDomainWarning, UncoveredOpError
from hw_profiles.latency import load_calibrated_domain, save_calibrated
from hw_profiles.registry import SNAPDRAGON855_MODEL
from search_spaces import MBv3Arch, create_space

META = ProfileMeta(name="synthetic", device="none", soc=None, runtime="test", runtime_version=None, threads=1,
                   batch=1, units="ms", method="synthetic values", space="nb201_tiny")


def test_snapdragon_on_fmnist_networks_warns_once_naming_range_and_value() -> None:
    space, model = create_space("ofa_mbv3_fmnist"), create_hw_profile("snapdragon855")
    archs = [space.sample(i) for i in range(5)]
    with pytest.warns(OutOfDomainWarning) as record:
        model.evaluate_many(space, archs)
    messages = [str(w.message) for w in record]
    assert any("conv input size" in m and "outside [160, 224]" in m for m in messages)
    assert any("conv in_c=1 channels is outside [3, 1536]" in m for m in messages)
    assert len(messages) == len(set(messages))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the same model warns no more
        model.evaluate_many(space, [space.sample(9)])


def test_strict_refuses_out_of_domain_and_accepts_in_domain() -> None:
    strict = create_hw_profile("snapdragon855", strict=True)
    fmnist = create_space("ofa_mbv3_fmnist")
    with pytest.raises(OutOfDomainError, match=r"outside \[160, 224\].*strict=true"):
        strict.evaluate_many(fmnist, [fmnist.sample(0)])
    ofa = create_space("ofa_mbv3_w12", resolutions=(192, 224))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = strict.evaluate_many(ofa, [ofa.sample(i) for i in range(4)]).values
    assert np.all(values > 1.0)


def test_uncovered_op_is_a_named_error_never_zero() -> None:
    nb201 = create_space("nb201")
    with pytest.raises(UncoveredOpError, match="no entry or model for op 'conv_bn'"):
        create_hw_profile("snapdragon855").evaluate_many(nb201, [nb201.sample(0)])
    # a measured table without the 3x3 average pool: the fallback covers only the ops it was fitted on
    tiny = create_space("nb201_tiny")
    specs = [s for s in tiny.layer_table().specs() if s.op != "avg_pool_3x3"]
    entries = {s.key(): Entry(mean=0.01 * (i + 1)) for i, s in enumerate(specs)}
    model = LatencyModel.from_profile(HardwareProfile(META, entries))
    no_pool = tiny.parse("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|nor_conv_3x3~2|")
    assert model.evaluate_many(tiny, [no_pool]).values[0] > 0
    pool = tiny.parse("|avg_pool_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|nor_conv_3x3~2|")
    with pytest.raises(UncoveredOpError, match="'avg_pool_3x3'"):
        model.evaluate_many(tiny, [pool])


def test_table_fallback_warns_outside_the_measured_sizes() -> None:
    space = create_space("vit_tiny")
    specs = space.layer_table().specs()
    entries = {s.key(): Entry(mean=0.01 + 0.001 * s.in_c) for s in specs}
    model = LatencyModel.from_profile(HardwareProfile(META, entries))
    bigger = create_space("vit_tiny", embed_dims=(32, 48, 64, 512))  # 512 channels: beyond the measured 64
    with pytest.warns(OutOfDomainWarning, match=r"in_c=512 channels is outside \[\d+, \d+\]"):
        model.evaluate_many(bigger, [bigger.max_arch()])


def test_calibrated_domain_round_trips(tmp_path) -> None:
    domain = load_calibrated_domain(SNAPDRAGON855_MODEL)
    assert domain is not None and domain.ranges["conv"] == (160, 224) and domain.batch == 1
    from hw_profiles.latency import load_calibrated

    meta, model, validation = load_calibrated(SNAPDRAGON855_MODEL)
    out = save_calibrated(tmp_path / "m.json", meta, model, validation, domain)
    assert load_calibrated_domain(out) == domain
    assert Domain.from_dict(domain.to_dict()) == domain


def test_snapdragon_reports_its_heldout_error_where_the_network_falls() -> None:
    model = create_hw_profile("snapdragon855")
    space = create_space("ofa_mbv3_w12", resolutions=(160, 224))
    arch = space.sample(0)
    at_160, at_224 = (model.evaluate(space, MBv3Arch.from_dict({**arch.to_dict(), "r": r})) for r in (160, 224))
    assert at_160.heldout_error == pytest.approx(0.0358) and at_224.heldout_error == pytest.approx(0.0313)
    assert "held-out error 3.6% here" in str(at_160)
    fmnist = create_space("ofa_mbv3_fmnist")
    with pytest.warns(OutOfDomainWarning):
        assert model.evaluate(fmnist, fmnist.sample(0)).heldout_error is None
