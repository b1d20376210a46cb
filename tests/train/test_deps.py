"""DεpS: the beta schedule, per-element aggregation, warm-up/shrinking plans, exact resume and the CLI path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nas.checkpoints import load_checkpoint, load_supernet
from nas.train import Trainer
from nas.train.samplers import create_sampler
from nas.train.samplers.deps import DepsSampler, DepsSchedule, MaskedGradAggregator
from supernets import create_supernet
from tests.train.conftest import small_config, small_data

REPO = Path(__file__).resolve().parents[2]


def test_schedule_is_zero_in_warmup_then_ramps_linearly_to_the_multiplier():
    s = DepsSchedule(warmup=0.5, ramp=0.2, multiplier=2.0)
    assert not s.shrinking(0.49) and s.shrinking(0.5)
    assert s.beta(0.3) == 0.0 and s.beta(0.5) == 0.0
    assert s.beta(0.6) == pytest.approx(1.0) and s.beta(0.65) == pytest.approx(1.5)
    assert s.beta(0.7) == 2.0 and s.beta(0.99) == 2.0
    assert DepsSchedule(warmup=0.5, ramp=0.0).beta(0.5) == 1.0
    with pytest.raises(ValueError, match="warmup"):
        DepsSchedule(warmup=1.0)


class _Rows(nn.Module):
    """A 'supernet' whose subnet k uses the first k rows of one weight."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4, 3))

    def loss(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return (self.w[:k] * x[:k]).sum()


def test_mean_aggregation_gives_each_weight_the_mean_over_the_subnets_that_use_it():
    torch.manual_seed(0)
    m = _Rows()
    xs = {"full": torch.randn(4, 3), 1: torch.randn(4, 3), 2: torch.randn(4, 3), 3: torch.randn(4, 3)}
    agg = MaskedGradAggregator()
    m.loss(4, xs["full"]).backward()
    agg.start(m)
    for k in (1, 2, 3):  # row 0 used by 3 students, row 1 by 2, row 2 by 1, row 3 by none
        m.loss(k, xs[k]).backward()
        agg.add(m)
    beta = 0.5
    agg.finish(m, beta)
    want = xs["full"].clone()
    want[0] += beta * (xs[1][0] + xs[2][0] + xs[3][0]) / 3
    want[1] += beta * (xs[2][1] + xs[3][1]) / 2
    want[2] += beta * xs[3][2]
    torch.testing.assert_close(m.w.grad, want)


def _data():
    return small_data()


def _cfg(**kw):
    return small_config(**kw)


def test_plans_train_the_full_net_alone_then_beta_weighted_students():
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny")
    s = create_sampler("deps", net.space, warmup=0.5, ramp=0.25, multiplier=2.0, n_random=1)
    s.bind(net, steps_per_epoch=4, epochs=2)
    plans = [s.plan(i, None) for i in range(8)]
    assert [len(p) for p in plans] == [1, 1, 1, 1, 3, 3, 3, 3]
    assert plans[0].archs[0] == net.space.max_arch()
    assert [p.tasks[-1].weight for p in plans[4:]] == [0.0, 1.0, 2.0, 2.0]
    assert plans[4].tasks[-1].arch == net.space.min_arch() and plans[4].tasks[-1].recipe.needs_inplace_teacher
    assert s.sorted_at == 4


def test_channel_sort_keeps_the_function_and_happens_once():
    torch.manual_seed(0)
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny").eval()
    x = torch.randn(2, 1, 28, 28)
    net.set_arch(net.space.max_arch())
    before, w = net(x), net.blocks[0].project_conv.conv.weight.clone()
    s = create_sampler("deps", net.space, warmup=0.0, ramp=0.0)
    s.bind(net, steps_per_epoch=2, epochs=1)
    s.plan(0, None)
    net.set_arch(net.space.max_arch())
    torch.testing.assert_close(net(x), before, rtol=1e-4, atol=1e-5)
    assert not torch.equal(w, net.blocks[0].project_conv.conv.weight)  # permuted by importance
    w = net.blocks[0].project_conv.conv.weight.clone()
    s.plan(1, None)
    assert torch.equal(w, net.blocks[0].project_conv.conv.weight) and s.sorted_at == 0


class _Crash(DepsSampler):
    def plan(self, step, batch):
        if step == 7:
            raise KeyboardInterrupt
        return super().plan(step, batch)


@pytest.mark.parametrize("aggregate", ["mean"])
def test_resume_equals_an_uninterrupted_run(tmp_path, aggregate):
    kw = dict(warmup=0.3, ramp=0.2, n_random=1, aggregate=aggregate)
    torch.manual_seed(0)
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny")
    with pytest.raises(KeyboardInterrupt):
        Trainer(net, _data(), _Crash(net.space, **kw), _cfg(), tmp_path / "a").fit()
    assert load_checkpoint(tmp_path / "a" / "checkpoint.pt")["sampler"]["sorted_at"] == 3
    torch.manual_seed(0)
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny")
    res = Trainer(net, _data(), DepsSampler(net.space, **kw), _cfg(), tmp_path / "a").fit(resume=True)
    assert res.resumed_from_step == 7 and res.steps == 10
    torch.manual_seed(0)
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny")
    Trainer(net, _data(), DepsSampler(net.space, **kw), _cfg(), tmp_path / "b").fit()
    a, b = load_supernet(tmp_path / "a"), load_supernet(tmp_path / "b")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_cli_trains_deps_and_starts_shrinking_on_schedule(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nas.train", "sampler=deps", "search_space=ofa_mbv3_tiny", "trainer.epochs=1",
           "trainer.max_steps_per_epoch=3", f"out_dir={out}", "data.kwargs.train_limit=320",
           "data.kwargs.val_size=200", "trainer.batch_size=32", "trainer.threads=1", "trainer.progress=false",
           "trainer.tensorboard=false", "trainer.log_every=1", "trainer.eval_images=200", "trainer.calib_images=64",
           "hydra.run.dir=" + str(tmp_path / "hydra")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["finished"] and state["step"] == 3 and state["sampler"]["sorted_at"] == 2  # 2/3 >= warmup 0.54
    header, *rows = (out / "metrics.csv").read_text().splitlines()
    cols = header.split(",")
    mins = [r.split(",")[cols.index("loss_min")] for r in rows]
    assert mins[:2] == ["", ""] and float(mins[2]) > 0  # students (beta = 1 past the ramp) join at step 3


def test_cost_extremes_take_the_largest_and_smallest_macs_archs_on_nb201():
    from search_spaces import create_space

    space = create_space("nb201_tiny")
    s = create_sampler("deps", space, extremes="cost")
    assert s.full_arch.ops == ("nor_conv_3x3",) * 6 and s.min_arch.ops == ("none",) * 6
    rng = np.random.default_rng(0)
    assert all(space.macs(s.full_arch) >= space.macs(space.sample(rng)) for _ in range(50))
