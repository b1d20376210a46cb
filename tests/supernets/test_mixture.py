"""Mixture (differentiable-NAS) forwards of the supernets: one-hot mixtures equal discrete subnets, gradients reach
the architecture logits and the weights, the entangled kernel equals the elastic op's kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from search_spaces import MBv3Arch, create_space
from supernets import create_supernet
from supernets.mixture import (
    ArchParameters,
    MixtureError,
    channel_shuffle,
    expand_mask,
    fbnet_loss,
    gumbel_temperature,
    onehot_soft,
)
from supernets.ops import ElasticDepthwiseConv2d


def _perturb(net: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere (transform matrices and BN affine included), so equalities are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def nb201():
    torch.manual_seed(0)
    net = create_supernet("nb201", create_space("nb201_tiny"))
    _perturb(net)
    return net.train()


@pytest.fixture(scope="module")
def mbv3():
    torch.manual_seed(0)
    net = create_supernet("ofa_mbv3", create_space("ofa_mbv3_tiny"), dropout=0.0)
    _perturb(net)
    return net.train()


@pytest.mark.parametrize("mode", ["darts", "fbnet", "tangle"])
def test_nb201_onehot_mixture_is_the_discrete_cell(nb201, mode):
    sp, x, rng = nb201.space, torch.randn(4, 1, 28, 28), np.random.default_rng(1)
    choices = nb201.mixture_choices(mode)
    archs = [sp.parse("|nor_conv_1x1~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|")]
    for arch in archs + [sp.sample(rng) for _ in range(2)]:
        with nb201.use(arch):
            ref = nb201(x)
        with nb201.mixed(onehot_soft(mode, choices, dict(zip(choices, arch.ops)))):
            out = nb201(x)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["darts", "tangle"])
def test_mbv3_onehot_mixture_is_the_discrete_subnet(mbv3, mode):
    """Eval mode (running statistics) and train mode (batch statistics; a batch of 8 keeps the BN of the 1x1 last
    stage well-conditioned, so rounding differences stay at float precision)."""
    sp, x, rng = mbv3.space, torch.randn(8, 1, 28, 28), np.random.default_rng(2)
    choices = mbv3.mixture_choices(mode)
    for training in (False, True):
        mbv3.train(training)
        a = sp.sample(rng)
        arch = MBv3Arch(a.ks, a.e, a.d, 28)
        values = dict(zip([g.name for g in sp.genes()], sp._to_values(arch)))
        picked = {k: v if v is not None else choices[k][0] for k, v in values.items() if k in choices}
        with mbv3.use(arch):
            ref = mbv3(x)
        with mbv3.mixed(onehot_soft(mode, choices, picked)):
            out = mbv3(x)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        assert mbv3.derive({**picked, "r": 28}) == arch
    mbv3.train()


def test_mixed_block_restores_the_active_arch(mbv3):
    arch = mbv3.space.min_arch()
    mbv3.set_arch(arch)
    with mbv3.mixed(ArchParameters(mbv3.mixture_choices("tangle")).soft("tangle")):
        assert mbv3.arch == mbv3.space.max_arch()
    assert mbv3.arch == arch


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("transform", [True, False])
def test_entangled_kernel_of_onehot_is_the_elastic_kernel(kernel, transform):
    torch.manual_seed(0)
    op = ElasticDepthwiseConv2d(6, (3, 5, 7), transform=transform)
    _perturb(op)
    w = F.one_hot(torch.tensor(op.kernels.index(kernel)), 3).float()
    op.set_active(6, kernel)
    p = (7 - kernel) // 2
    torch.testing.assert_close(op.entangled_weight(w), F.pad(op.active_weight(), (p, p, p, p)))
    mix = torch.tensor([0.2, 0.3, 0.5])  # linear in the weights
    expect = sum(mix[i] * op.entangled_weight(torch.eye(3)[i]) for i in range(3))
    torch.testing.assert_close(op.entangled_weight(mix), expect)


@pytest.mark.parametrize("mode", ["darts", "fbnet", "pcdarts", "tangle"])
def test_nb201_gradients_reach_every_logit_and_the_weights(nb201, mode):
    nb201.zero_grad()
    ap = ArchParameters(nb201.mixture_choices(mode), edges=nb201.mixture_edges(mode),
                        generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    with nb201.mixed(ap.soft(mode, tau=1.0)):
        F.cross_entropy(nb201(x), y).backward()
    for name, p in ap.alpha.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if mode == "pcdarts":  # node1 has a single incoming edge: its softmax is constant
        assert all(ap.beta[n].grad.abs().sum() > 0 for n in ("node2", "node3"))
    conv3 = nb201.net.cells[0].edges[0]["nor_conv_3x3"][1].weight
    assert conv3.grad is not None and conv3.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["darts", "fbnet", "tangle"])
def test_mbv3_gradients_reach_kernel_expand_and_depth_logits(mbv3, mode):
    mbv3.zero_grad()
    ap = ArchParameters(mbv3.mixture_choices(mode), generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(2, 1, 32, 32), torch.randint(0, 10, (2,))
    with mbv3.mixed(ap.soft(mode, tau=1.0)):
        F.cross_entropy(mbv3(x), y).backward()
    # the first stages see large feature maps, where every kernel and width choice changes the output
    for name in ("ks0", "ks1", "e0", "e1", "e4", "d0", "d1", "d2"):
        assert ap.alpha[name].grad.abs().sum() > 0, name
    assert mbv3.blocks[0].dw_conv.conv.weight.grad.abs().sum() > 0


def test_pcdarts_partial_channels_and_shuffle(nb201):
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    with pytest.raises(MixtureError, match="divisible"):
        ap = ArchParameters(nb201.mixture_choices("pcdarts"), edges=nb201.mixture_edges("pcdarts"))
        with nb201.mixed(ap.soft("pcdarts", partial=3)):
            nb201(torch.randn(2, 1, 28, 28))


def test_expand_mask_and_schedule_and_loss():
    m = expand_mask(torch.tensor([0.2, 0.3, 0.5]), [2, 3, 4], 5)
    torch.testing.assert_close(m, torch.tensor([1.0, 1.0, 0.8, 0.5, 0.0]))
    assert gumbel_temperature(0) == 5.0
    assert gumbel_temperature(10) == pytest.approx(5.0 * np.exp(-0.45))
    ce, lat = torch.tensor(2.0), torch.tensor(1000.0)
    assert float(fbnet_loss(ce, lat)) == pytest.approx(2.0 * 0.2 * np.log(1000.0) ** 0.6)  # not 0.2*0.6*log
    with pytest.raises(MixtureError, match="> 0"):
        gumbel_temperature(3, tau0=0.0)


def test_modes_without_a_mixture_form_are_refused(mbv3):
    with pytest.raises(MixtureError, match="pcdarts"):
        mbv3.mixture_choices("pcdarts")
    vit = create_supernet("vit", create_space("vit_tiny"))
    with pytest.raises(MixtureError, match="no mixture form"):
        vit.mixture_choices("darts")
    with pytest.raises(MixtureError, match="not a differentiable-NAS mode"):
        mbv3.mixture_choices("enas")
    ap = ArchParameters(mbv3.mixture_choices("fbnet"))
    with pytest.raises(MixtureError, match="temperature"):
        ap.soft("fbnet", tau=0.0)


@pytest.mark.parametrize("kinds", [("skip_connect", "avg_pool_3x3"), ("avg_pool_3x3",), ("skip_connect",)])
def test_param_free_mixture_matches_autograd_and_saves_only_its_input(kinds):
    """The fused skip/pool mixture gives autograd's value and gradients (gradcheck in float64) while saving only the
    input and the weights: the pooled map is recomputed in backward."""
    from supernets.nb201 import _PARAM_FREE, _ParamFreeMix

    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.rand(len(kinds), dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z, w: _ParamFreeMix.apply(z, w, kinds), (z, w))
    ref = sum(w[k] * _PARAM_FREE[kind](z) for k, kind in enumerate(kinds))
    torch.testing.assert_close(_ParamFreeMix.apply(z, w, kinds), ref)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        _ParamFreeMix.apply(z, w, kinds)
    assert {t.data_ptr() for t in saved} == {z.data_ptr(), w.data_ptr()}
