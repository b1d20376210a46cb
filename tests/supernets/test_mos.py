"""Mixture-of-Supernets layers: valid mixtures, gradients, equivalence to weight sharing, materialised export."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from supernets import create_supernet, load_subnet, save_subnet
from supernets.mos import MoSLinear
from supernets.vit import vit_arch_encoding

MODES = ["layer", "neuron"]


def _mos_net(mode, seed=0, **kw):
    torch.manual_seed(seed)
    return create_supernet("vit", "vit_tiny", mos_experts=2, mos_mode=mode, **kw)


@pytest.mark.parametrize("mode", MODES)
def test_router_outputs_valid_mixtures_that_depend_on_the_arch(mode):
    net = _mos_net(mode)
    sp = net.space
    layer = net.blocks[0].mlp.fc1
    alphas = []
    for arch in (sp.min_arch(), sp.max_arch(), sp.sample(3)):
        net.set_arch(arch)
        alpha = layer.mixture().detach()
        hidden = sp.blocks(arch)[0].hidden
        assert alpha.shape == ((2,) if mode == "layer" else (hidden, 2))
        assert torch.all(alpha >= 0) and torch.allclose(alpha.sum(-1), torch.ones(alpha.shape[:-1]))
        alphas.append(alpha.reshape(-1, 2)[0])
    assert not torch.allclose(alphas[0], alphas[1])


def test_supernet_computes_the_encoding_in_set_arch_and_use_restores_it():
    net = _mos_net("layer")
    sp = net.space
    a, b = sp.sample(0), sp.sample(1)
    net.set_arch(a)
    layers = [m for m in net.modules() if isinstance(m, MoSLinear)]
    assert len(layers) == 2 * sp.max_depth
    expected = torch.tensor(vit_arch_encoding(sp, a))
    assert all(torch.allclose(m.encoding, expected) for m in layers)
    with net.use(b):
        assert torch.allclose(layers[0].encoding, torch.tensor(vit_arch_encoding(sp, b)))
    assert torch.allclose(layers[0].encoding, expected)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_every_expert_and_router(mode):
    net = _mos_net(mode).train()
    sp = net.space
    arch = sp.sample(5)
    net.set_arch(arch)
    net(torch.randn(4, 1, 28, 28)).logsumexp(1).sum().backward()
    for i, blk in enumerate(net.blocks):
        for layer in (blk.mlp.fc1, blk.mlp.fc2):
            active = i < arch.depth
            for e in range(2):
                g = layer.weight.grad
                assert (g is not None and g[e].abs().sum() > 0) == active
            for p in layer.router.parameters():
                assert (p.grad is not None and p.grad.abs().sum() > 0) == active


@pytest.mark.parametrize("mode", MODES)
def test_identical_experts_make_mos_equal_plain_weight_sharing(mode):
    torch.manual_seed(0)
    plain = create_supernet("vit", "vit_tiny").eval()
    mos = _mos_net(mode, seed=1).eval()
    missing, unexpected = mos.load_state_dict(plain.state_dict(), strict=False)
    assert all(".mlp.fc" in k for k in missing + unexpected)
    for p_blk, m_blk in zip(plain.blocks, mos.blocks):
        m_blk.mlp.fc1.load_from_linear(p_blk.mlp.fc1.linear)
        m_blk.mlp.fc2.load_from_linear(p_blk.mlp.fc2.linear)
    x = torch.randn(3, 1, 28, 28)
    sp = plain.space
    for arch in (sp.min_arch(), sp.max_arch(), sp.sample(2), sp.sample(9)):
        with torch.no_grad(), plain.use(arch), mos.use(arch):
            assert torch.allclose(mos(x), plain(x), atol=1e-5)
    # ...and stops being equal once one expert moves.
    with torch.no_grad():
        mos.blocks[0].mlp.fc1.weight[1].add_(0.5 * torch.randn_like(mos.blocks[0].mlp.fc1.weight[1]))
        arch = sp.max_arch()
        with plain.use(arch), mos.use(arch):
            assert not torch.allclose(mos(x), plain(x), atol=1e-3)


@pytest.mark.parametrize("mode", MODES)
def test_materialised_export_is_a_dense_static_net_computing_the_mos_output(mode, tmp_path):
    net = _mos_net(mode, mos_layers=["fc1", "fc2", "proj"]).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sp = net.space
    x = torch.randn(3, 1, 28, 28)
    for i, arch in enumerate((sp.min_arch(), sp.max_arch(), sp.sample(4))):
        with torch.no_grad(), net.use(arch):
            ref = net(x)
        ex = net.export(arch)
        assert not any(isinstance(m, MoSLinear) for m in ex.module.modules())
        assert sum(p.numel() for p in ex.module.parameters()) == sp.params(arch)
        assert torch.allclose(ex.module.eval()(x), ref, atol=1e-5)
        if i == 2:
            out = save_subnet(tmp_path / "s", ex.module, ex.config, {}, onnx_input_shape=(1, 1, 28, 28))
            assert torch.allclose(load_subnet(out).module(x), ref, atol=1e-5)
            got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"input": x.numpy()})[0]
            np.testing.assert_allclose(got, ref.numpy(), atol=1e-4)


def test_neuron_wise_mixture_is_per_output_neuron():
    torch.manual_seed(0)
    layer = MoSLinear(6, 5, experts=3, mode="neuron", enc_dim=2, router_hidden=8)
    layer.set_encoding(torch.tensor([0.3, -1.0]))
    layer.set_active(4)
    alpha = layer.mixture()
    w, b = layer.active_weight(6)
    for j in range(4):
        expected = sum(alpha[j, i] * layer.weight[i, j] for i in range(3))
        assert torch.allclose(w[j], expected, atol=1e-6)
        assert torch.allclose(b[j], sum(alpha[j, i] * layer.bias[i, j] for i in range(3)), atol=1e-6)
    assert not torch.allclose(alpha[0], alpha[1])


def test_mos_layer_rejects_bad_settings():
    with pytest.raises(ValueError, match="mode 'token'"):
        MoSLinear(4, 4, mode="token", enc_dim=2)
    layer = MoSLinear(4, 4, enc_dim=2)
    with pytest.raises(ValueError, match="shape"):
        layer.set_encoding(torch.zeros(3))
    with pytest.raises(ValueError, match="does not fit"):
        layer.load_from_linear(nn.Linear(4, 5))
