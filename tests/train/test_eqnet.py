"""EQ-Net's recipe on the trainer: bit sandwich plans, chained distillation, WDR, calibration, modes, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas.data import Batch, create_data
from nas.train import SAMPLERS, TrainConfig, Trainer, create_sampler
from nas.train.run import run_train
from nas.train.samplers.eqnet import EQNetSampler
from search_spaces import create_space
from supernets import create_supernet
from supernets.quant import quant_layers
from supernets.quant.wdr import wdr_loss

from .conftest import tiny_config

CELL = {"arch_str": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"}


def _space(**kw):
    return create_space("quant_nb201_tiny", fixed_arch=CELL, **kw)


def _batch(n: int = 32) -> Batch:
    data = create_data("fashion_mnist", train_limit=320, val_size=500)
    x, y = data.get("train", np.arange(n))
    return Batch(x, y, torch.arange(n))


def test_plan_is_a_bit_sandwich_with_a_distillation_chain() -> None:
    space = _space(w_bits=[2, 4, 8], a_bits=[3, 8])
    sampler = create_sampler("eqnet", space, seed=0)
    assert "eqnet" in SAMPLERS and isinstance(sampler, EQNetSampler)
    plan = sampler.plan(0, _batch(4))
    high, rand, low = plan.tasks
    free = [i for i in range(len(space.slots)) if i not in space.fixed_slots]
    bits = lambda j: {(j.policy.layers[i].w_bits, j.policy.layers[i].a_bits) for i in free  # noqa: E731
                      if j.policy.layers[i] is not None}
    assert bits(high.arch) == {(8, 8)} and bits(low.arch) == {(2, 3)}
    assert (high.recipe.hard, high.recipe.soft, high.teacher) == (1.0, 0.0, True)
    assert (rand.recipe.hard, rand.recipe.soft, rand.recipe.source, rand.teacher) == (0.5, 0.5, "inplace", True)
    assert (low.recipe.hard, low.recipe.soft, low.teacher) == (0.5, 0.5, False)
    with pytest.raises(TypeError, match="joint"):
        create_sampler("eqnet", create_space("nb201_tiny"))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_highest_and_lowest_draw_modes_like_the_random_subnet(scope: str) -> None:
    sampler = EQNetSampler(_space(mode_scope=scope), seed=1)
    share = {"high": [], "random": [], "low": []}
    for step in range(60):
        for task in sampler.plan(step, _batch(2)).tasks if step == 0 else _plans(sampler):
            layers = task.arch.policy.active_layers()
            share[task.tag].append(np.mean([q.per_channel for q in layers]))
            if scope == "global":
                assert len({(q.w_granularity, q.w_symmetric, q.a_symmetric) for q in layers}) == 1
    for tag in share:
        assert 0.3 < np.mean(share[tag]) < 0.7  # per-channel about half the time for every subnet
    if scope == "layer":
        assert 0.0 < share["high"][0] < 1.0


def _plans(sampler: EQNetSampler):
    high, low = sampler.highest(), sampler.lowest()
    rand = sampler.space.sample(sampler.rng)
    return [type("T", (), {"arch": a, "tag": t}) for a, t in ((high, "high"), (rand, "random"), (low, "low"))]


def test_trainer_step_chains_distillation_and_adds_wdr(tmp_path) -> None:
    torch.manual_seed(0)
    space = _space(w_bits=[2, 4, 8], a_bits=[2, 4, 8])
    net = create_supernet("quant", space)
    seen = []

    class Recording(EQNetSampler):
        def observe(self, result, model) -> None:
            seen.append(result)

        def on_step_end(self, step, model) -> None:
            before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            super().on_step_end(step, model)
            weight = quant_layers(model)[2].op.weight
            name = next(n for n, p in model.named_parameters() if p is weight)
            expected = torch.autograd.grad(wdr_loss(model), weight)[0]
            assert torch.allclose(weight.grad - before[name], expected, atol=1e-6)

    sampler = Recording(space, seed=0, calib_images=64, calib_steps=8)
    data = create_data("fashion_mnist", train_limit=96, val_size=500)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.01, optimizer="adamw", weight_decay=0.0, threads=1,
                      eval_every=0, progress=False, tensorboard=False, log_every=1, max_steps_per_epoch=1)
    Trainer(net, data, sampler, cfg, tmp_path).fit()
    ran = net.trace(space.policy_for(space.fixed_arch, 8, 8))
    assert all(bool(q.aq.initialized) and bool(q.wq.initialized) for q in ran)  # calibrated at the first step
    assert not all(bool(q.aq.initialized) for q in quant_layers(net))  # ops the fixed cell never runs
    high, rand, low = seen
    assert [r.task.tag for r in seen] == ["high", "random", "low"]
    kl = lambda s, t: F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="none",  # noqa: E731
                               log_target=True).sum(-1)
    ce_low = F.cross_entropy(low.logits, low.targets, reduction="none")
    assert torch.allclose(low.per_example, 0.5 * kl(low.logits, rand.logits) + 0.5 * ce_low, atol=1e-5)
    assert not torch.allclose(low.per_example, 0.5 * kl(low.logits, high.logits) + 0.5 * ce_low, atol=1e-3)
    ce_rand = F.cross_entropy(rand.logits, rand.targets, reduction="none")
    assert torch.allclose(rand.per_example, 0.5 * kl(rand.logits, high.logits) + 0.5 * ce_rand, atol=1e-5)
    assert np.isfinite(sampler.last_wdr) and sampler.last_wdr > 0


def test_cli_trains_a_quantised_supernet(tmp_path) -> None:
    cfg = tiny_config(tmp_path, "search_space=quant_nb201_tiny", "supernet=quant", "sampler=eqnet",
                      "trainer.epochs=1", "trainer.max_steps_per_epoch=3", "sampler.kwargs.calib_images=32",
                      "sampler.kwargs.calib_steps=8",
                      "trainer.eval_every=1", "trainer.eval_images=64", "trainer.calib_images=64",
                      "trainer.calib_batch=32")
    result = run_train(cfg)
    assert result.steps == 3
    assert {r["subnet"] for r in result.evals} == {"max", "min"}
    assert all(0.0 <= r["top1"] <= 100.0 for r in result.evals)
    assert (tmp_path / "supernet.safetensors").exists() or any(tmp_path.glob("*.safetensors"))


def test_random_draw_cqap_spreads_the_random_subnets_average_bits() -> None:
    from search_spaces.quant_costs import average_bits

    space = create_space("quant_ofa_mbv3_fmnist", w_bits=[3, 4, 5, 6, 7, 8], a_bits=[3, 4, 5, 6, 7, 8])
    batch = _batch(2)
    spread = {}
    for draw in ("uniform", "cqap"):
        sampler = create_sampler("eqnet", space, seed=0, random_draw=draw)
        rand = [t.arch for step in range(40) for t in sampler.plan(step, batch).tasks if t.tag == "random"]
        spread[draw] = np.std([average_bits(space, j, "w") for j in rand])
    assert spread["cqap"] > 2.5 * spread["uniform"]
    with pytest.raises(ValueError, match="random_draw='gauss'; choose 'uniform'"):
        create_sampler("eqnet", space, random_draw="gauss")


def test_cli_trains_a_double_rounding_supernet_that_loads_and_exports(tmp_path) -> None:
    from nas.checkpoints import load_supernet
    from supernets.quant.double_rounding import DoubleRoundingQuantizer

    cfg = tiny_config(tmp_path, "search_space=quant_nb201_tiny", "supernet=quant", "sampler=eqnet",
                      "supernet.kwargs.quantizer=double_rounding", "+supernet.kwargs.quantizer_kwargs.alrs=true",
                      "trainer.epochs=1", "trainer.max_steps_per_epoch=2", "trainer.optimizer=adamw", "trainer.lr=1e-3",
                      "sampler.kwargs.calib_images=32", "sampler.kwargs.calib_steps=8")
    assert run_train(cfg).steps == 2
    net = load_supernet(tmp_path).eval()
    assert net.spec()["quantizer"] == "double_rounding"
    ran = net.trace(net.space.min_arch())
    assert ran and all(isinstance(q.wq, DoubleRoundingQuantizer) and bool(q.wq.initialized) for q in ran)
    assert any(float(q.wq.grad_mag.sum()) > 0 for q in ran)  # ALRS measured the precisions while training
    joint = net.space.min_arch()
    x = torch.randn(4, *net.space.input_shape(joint))
    with torch.no_grad(), net.use(joint):
        assert torch.allclose(net.export(joint).module.eval()(x), net(x), atol=1e-5)
