"""Double Rounding quantiser family: bit switching from one int8 copy, ALRS, gradients, export, resume, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.checkpoints import load_supernet
from nas.data import create_data
from nas.train import TrainConfig, Trainer
from nas.train.samplers.eqnet import EQNetSampler
from search_spaces import create_space
from search_spaces.errors import BadInputError
from supernets import create_supernet
from supernets.export import load_subnet, save_subnet
from supernets.quant import FakeQuantLayer, QuantSupernet, calibrate, full_precision, quant_layers
from supernets.quant.double_rounding import DoubleRoundingQuantizer, switch_bits

CELL = {"arch_str": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"}
MODES = [(pc, sym) for pc in (False, True) for sym in (True, False)]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread."""


def _quantizer(seed: int = 0, **kw) -> tuple[DoubleRoundingQuantizer, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 3, 3, 3, generator=gen) + 0.05
    q = DoubleRoundingQuantizer(6, **kw)
    q.calibrate(w, steps=40)
    return q, w


@pytest.mark.parametrize(("per_channel", "symmetric"), MODES)
def test_every_bit_width_is_a_rounding_shift_of_the_int8_copy(per_channel: bool, symmetric: bool) -> None:
    q, w = _quantizer()
    q8, s, z8 = q.integer_weights(w, per_channel, symmetric)
    assert q8.dtype == torch.int8 and int(q8.min()) >= -128 and int(q8.max()) <= 127
    errors = []
    for b in range(2, 9):
        qb, zb = switch_bits(q8, z8, b)  # integer arithmetic only: (q + 2^(k-1)) >> k
        k = 8 - b
        assert int(qb.min()) >= -(2 ** (b - 1)) and int(qb.max()) <= 2 ** (b - 1) - 1
        assert torch.equal(q(w, b, per_channel, symmetric), s * 2**k * (qb - zb).float())
        step, zero = q.effective(b, per_channel, symmetric, 6)  # the export's grid: step s 2^k, zero zb
        assert torch.allclose(step.reshape(s.shape), s * 2**k) and torch.equal(zero.reshape(zb.shape).int(), zb)
        errors.append(float((q(w, b, per_channel, symmetric) - w).detach().abs().mean()))
    assert errors[0] > errors[2] > errors[4] > errors[6]  # 2 > 4 > 6 > 8 bits: lower bits, coarser grid
    # a by-hand case: 8-bit code 45 at 4 bits is (45 + 8) >> 4 = 3, -45 -> (-37) >> 4 = -3 (round half up)
    qb, _ = switch_bits(torch.tensor([45, -45, 24, -24, 127, -128], dtype=torch.int8), torch.tensor(0), 4)
    assert qb.tolist() == [3, -3, 2, -1, 7, -8]


def test_gradients_reach_the_weight_and_the_shared_step_with_alrs_scaling() -> None:
    q, w = _quantizer(alrs=True)
    ref, _ = _quantizer(alrs=False)
    w = w.requires_grad_()
    q.train()
    probe = torch.linspace(-1, 1, w.numel()).reshape(w.shape)

    def step(quant: DoubleRoundingQuantizer, bits: int) -> torch.Tensor:
        quant.zero_grad()
        w.grad = None
        (quant(w, bits, True, True) * probe).sum().backward()
        return quant.scale_channel.grad.clone()

    assert q.alrs_factor(4, True) == 1.0  # nothing measured yet
    raw8, raw4 = step(ref, 8), step(ref, 4)
    assert torch.equal(step(q, 8), raw8) and torch.equal(step(q, 4), raw4)  # first sight of each: undamped
    # running raw magnitudes per precision (per-channel row; dL/ds before LSQ's 1/sqrt(127 n), same for all bits)
    mags = q.grad_mag[1]
    assert float(mags[2] / mags[6]) == pytest.approx(float(raw4[0].abs().mean() / raw8[0].abs().mean()), rel=1e-5)
    assert float(mags[2]) > float(mags[6])
    lam = q.alrs_factor(4, True)
    assert lam == pytest.approx(max(1 / 16, float(mags[6] / mags[2])), rel=1e-6) and 1 / 16 <= lam < 1.0
    damped = step(q, 4)
    assert torch.allclose(damped, lam * raw4, rtol=1e-5, atol=1e-12)  # the 4-bit share of the step, scaled
    assert float(damped[0].abs().sum()) > 0 and float(damped[1].abs().sum()) == 0  # symmetric table only
    assert w.grad is not None and float(w.grad.abs().sum()) > 0
    assert float(q.grad_mag[1, 2]) == pytest.approx(float(mags[2]))  # records the raw, not the damped gradient
    assert ref.alrs_factor(4, True) == 1.0 and float(ref.grad_mag.abs().sum()) == 0  # ALRS off: never damps


@pytest.fixture(scope="module")
def net() -> QuantSupernet:
    torch.manual_seed(0)
    space = create_space("quant_nb201_tiny", fixed_arch=CELL)
    net = create_supernet("quant", space, quantizer="double_rounding")
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad(), full_precision(net), net.use(space.policy_for(space.fixed_arch, 8, 8)):
        for m in bns:
            m.momentum = None  # running statistics = this batch's, so calibration sees train-mode ranges
        net.train()(x)
        for m in bns:
            m.momentum = 0.1
    calibrate(net, x, steps=10)
    return net.eval()


def test_supernet_gradients_flow_to_weights_and_steps(net: QuantSupernet) -> None:
    space = net.space
    joint = space.policy_for(space.fixed_arch, 4, 4, w_granularity="per_tensor", w_symmetric=False)
    net.train()
    net.zero_grad()
    try:
        with net.use(joint):
            net(torch.randn(8, 1, 28, 28)).logsumexp(1).sum().backward()
        ran = net.binding.calls
    finally:
        net.eval()
    free = ran[1:-1]  # first and last layers run at 8/8
    assert all(isinstance(layer.wq, DoubleRoundingQuantizer) for layer in ran)
    for layer in ran:
        assert float(layer.adapter.full_weight(layer.op).grad.abs().sum()) > 0
        assert float(layer.aq.scale.grad.abs().sum()) > 0
    for layer in free:
        assert float(layer.wq.scale_tensor.grad[1].abs()) > 0 and float(layer.wq.zero_tensor.grad.abs()) > 0
        assert layer.wq.scale_channel.grad is None  # per-channel steps unused here


def test_export_computes_the_supernet_output(net: QuantSupernet, tmp_path) -> None:
    space = net.space
    rng = np.random.default_rng(0)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    joints = [space.policy_for(space.fixed_arch, 3, 4, w_granularity="per_channel", w_symmetric=False),
              space.policy_for(space.fixed_arch, 8, 8), space.sample(rng), space.sample(rng)]
    for joint in joints:
        with torch.no_grad(), net.use(joint):
            ref = net(x)
        exported = net.export(joint)
        with torch.no_grad():
            assert torch.allclose(exported.module.eval()(x), ref, atol=1e-5)
    layer = next(m for m in exported.module.modules() if isinstance(m, FakeQuantLayer))
    assert torch.equal(layer.quantized_weight(), layer.op.weight)  # stored on its own grid
    path = save_subnet(tmp_path / "sub", exported.module, exported.config, {"arch": space.to_dict(joint)})
    with torch.no_grad():
        assert torch.equal(load_subnet(path).module(x), exported.module(x))


def test_bad_quantizer_name_or_option_is_a_clear_error() -> None:
    space = create_space("quant_nb201_tiny", fixed_arch=CELL)
    with pytest.raises(BadInputError, match=r"unknown weight quantizer 'double_round'.*'double_rounding'.*eqnet"):
        create_supernet("quant", space, quantizer="double_round")
    with pytest.raises(BadInputError, match="unexpected keyword argument 'alr'"):
        create_supernet("quant", space, quantizer="double_rounding", quantizer_kwargs={"alr": False})


class _Crash(EQNetSampler):
    def plan(self, step, batch):
        if step == 3:
            raise KeyboardInterrupt
        return super().plan(step, batch)


def _train(out, sampler_cls, resume: bool = False) -> None:
    torch.manual_seed(0)
    space = create_space("quant_nb201_tiny", fixed_arch=CELL, w_bits=[3, 4, 8], a_bits=[4, 8])
    net = create_supernet("quant", space, quantizer="double_rounding")
    data = create_data("fashion_mnist", train_limit=160, val_size=200)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.01, optimizer="adamw", weight_decay=0.0, threads=1,
                      eval_every=0, progress=False, tensorboard=False, log_every=1, checkpoint_every=1)
    Trainer(net, data, sampler_cls(space, seed=0, calib_images=32, calib_steps=8), cfg, out).fit(resume=resume)


def test_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "a", _Crash)
    _train(tmp_path / "a", EQNetSampler, resume=True)
    _train(tmp_path / "b", EQNetSampler)
    a, b = load_supernet(tmp_path / "a"), load_supernet(tmp_path / "b")
    assert a.spec()["quantizer"] == "double_rounding"
    mags = [q.wq.grad_mag for q in quant_layers(a)]
    assert any(float(m.abs().sum()) > 0 for m in mags)  # ALRS state was live and is part of the checkpoint
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
