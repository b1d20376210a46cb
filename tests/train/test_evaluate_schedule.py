"""Subnet evaluation (BN recalibration, no pipeline rebuilds, CSV) and the learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from nas.checkpoints import save_weights
from nas.conf import CONF_DIR
from nas.data import create_data
from nas.evaluate import EvalSet, evaluate_subnets, read_measurements, run_evaluate, sample_archs
from nas.train.schedule import create_schedule
from supernets import create_supernet

CONF = str(CONF_DIR)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny")
    data = create_data("fashion_mnist", train_limit=400, val_size=500)
    return net, data


def test_evaluation_recalibrates_restores_stats_and_never_reloads_data(setup, monkeypatch):
    net, data = setup
    evalset = EvalSet(data, n_images=200, calib_images=100, calib_batch=50)
    calls = []
    monkeypatch.setattr(data, "get", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    archs = sample_archs(net.space, 4, seed=0)
    rows = evaluate_subnets(net, archs, evalset)
    assert not calls  # images were loaded once, at EvalSet construction
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # supernet BN stats restored
    assert [r["arch_id"] for r in rows] == [a.id for a in archs]
    assert [r["macs"] for r in rows] == [net.space.macs(a) for a in archs]
    assert evaluate_subnets(net, archs[:2], evalset) == rows[:2]  # deterministic
    plain = evaluate_subnets(net, archs[:2], evalset, recalibrate=False)
    assert [r["loss"] for r in plain] != [r["loss"] for r in rows[:2]]
    assert evalset.at(28)[1][0] is evalset.at(28)[1][0]  # resized once per resolution


def test_sample_archs_is_seeded_distinct_and_has_extremes(setup):
    space = setup[0].space
    a, b = sample_archs(space, 30, seed=3), sample_archs(space, 30, seed=3)
    assert [x.id for x in a] == [x.id for x in b] and len({x.id for x in a}) == 32
    assert a[0] == space.min_arch() and a[1] == space.max_arch()
    assert [x.id for x in sample_archs(space, 30, seed=4)] != [x.id for x in a]


def test_evaluate_cli_writes_measurements(setup, tmp_path):
    net, _ = setup
    save_weights(tmp_path / "w", net)
    out = tmp_path / "m.csv"
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="evaluate", overrides=[
            f"checkpoint={tmp_path / 'w'}", "n_random=3", "n_images=100", "calib_images=100", "calib_batch=50",
            "data.kwargs.train_limit=400", "data.kwargs.val_size=500", "progress=false", f"out={out}"])
    res = run_evaluate(cfg)
    rows = read_measurements(out, net.space)
    assert len(rows) == 5 and rows[0]["arch"] == net.space.min_arch() and rows[1]["arch"] == net.space.max_arch()
    assert [r["top1"] for r in rows] == [round(r["top1"], 4) for r in res.rows]
    assert all(0.0 <= r["top1"] <= 100.0 and r["params"] == net.space.params(r["arch"]) for r in rows)


def test_evaluate_takes_arch_ids_and_dicts(setup, tmp_path):
    """``archs=[<id>, {...}]``: ids parsed by the space (no measurements file next to the weights)."""
    net, _ = setup
    save_weights(tmp_path / "w", net)
    a, b = net.space.sample(1), net.space.sample(2)
    b_dict = "{" + ", ".join(f"{k}: {v}".replace("None", "null") for k, v in b.to_dict().items()) + "}"
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="evaluate", overrides=[
            f"checkpoint={tmp_path / 'w'}", f"archs=[{a.id},{b_dict}]", "n_images=50", "calib_images=50",
            "calib_batch=50", "data.kwargs.train_limit=100", "data.kwargs.val_size=100", "progress=false"])
    assert [r["arch_id"] for r in run_evaluate(cfg).rows] == [a.id, b.id]


def _lrs(name, total=100, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = create_schedule(name, opt, total_steps=total, **kw)
    out = []
    for t in range(total + 1):
        sched.step_update(t)
        out.append(opt.param_groups[0]["lr"])
    return out


def test_cosine_with_warmup():
    lrs = _lrs("cosine", warmup_steps=10, warmup_lr=0.1)
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(1.0) and lrs[100] == pytest.approx(0.0)
    assert lrs[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a <= b + 1e-12 for a, b in zip(lrs[:10], lrs[1:11]))


def test_exponential_decay_with_constant_ending():
    lrs = _lrs("exp_const", end_ratio=0.05, end_at=0.5)
    assert lrs[0] == pytest.approx(1.0) and lrs[25] == pytest.approx(math.sqrt(0.05))
    assert lrs[50] == pytest.approx(0.05) and all(v == pytest.approx(0.05) for v in lrs[50:])
    assert all(a > b for a, b in zip(lrs[:49], lrs[1:50]))
    with pytest.raises(KeyError, match="cosine"):
        _lrs("cosin")


def test_channels_last_batches_compute_the_same_function():
    torch.manual_seed(0)
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny", dropout=0.0)
    from nas.train.resize import resize_to

    x = torch.randn(6, 1, 28, 28)
    for mode in ("train", "eval"):
        getattr(net, mode)()
        for arch in sample_archs(net.space, 2, seed=0):
            net.set_arch(arch)
            nhwc = resize_to(x, arch.r, channels_last=True)
            assert nhwc.is_contiguous(memory_format=torch.channels_last)
            assert torch.allclose(net(resize_to(x, arch.r)), net(nhwc), atol=1e-5)
