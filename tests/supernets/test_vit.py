"""Elastic ViT space and supernet: canonical archs, exact costs, gradients, export/ONNX/reload equivalence."""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.testing import SearchSpaceContract, SupernetContract
from search_spaces import InvalidArchError, ViTArch, create_space
from search_spaces.vit import ViTSpace
from supernets import build_from_config, create_supernet, load_subnet, save_subnet, supernet_from_spec


def _perturbed(seed=0, **kw):
    torch.manual_seed(seed)
    net = create_supernet("vit", "vit_tiny", **kw)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def _archs(space):
    rng = np.random.default_rng(0)
    return [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(4)]


# -- space ----------------------------------------------------------------------------------------
def test_inactive_blocks_are_canonical_and_ids_ignore_them():
    sp = create_space("vit_tiny")
    a = ViTArch(embed=48, depth=2, heads=(2, 4, 1, 1), mlp=(2, 1.0, 4, 4))
    b = ViTArch(embed=48, depth=2, heads=(2, 4, 4, 2), mlp=(2.0, 1, 1, 2))
    assert a == b and hash(a) == hash(b) and a.id == b.id == "e48-d2-h2m2.h4m1"
    assert a.heads == (2, 4, None, None) and sp.encode(a).tolist() == sp.encode(b).tolist()
    assert sp.from_json(sp.to_json(a)) == a
    assert sp.decode(sp.encode(a)) == a


def test_cardinality_counts_distinct_networks():
    sp = ViTSpace(name="t", img_size=8, patch_size=4, in_chans=1, n_classes=2, embed_dims=(8, 16), depths=(1, 2),
                  heads=(1, 2), mlp_ratios=(1, 2), head_dim=4)
    lo, hi = sp.bounds()
    distinct = {sp.decode(x) for x in itertools.product(*[range(a, b + 1) for a, b in zip(lo, hi)])}
    assert len(distinct) == sp.cardinality() == 2 * (4 + 16)


def test_invalid_archs_name_the_problem():
    sp = create_space("vit_tiny")
    with pytest.raises(InvalidArchError, match="embed=40"):
        sp.validate(ViTArch(embed=40, depth=1, heads=(1,) * 4, mlp=(1,) * 4))
    with pytest.raises(InvalidArchError, match="heads1=3"):
        sp.validate(ViTArch(embed=32, depth=2, heads=(1, 3, 1, 1), mlp=(1,) * 4))
    with pytest.raises(InvalidArchError, match="4 blocks"):
        sp.validate(ViTArch(embed=32, depth=1, heads=(1,), mlp=(1,)))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTSpace(img_size=30, patch_size=7)


@pytest.mark.parametrize("space_name", ["vit_tiny", "vit_small"])
def test_analytic_macs_and_params_match_counted(space_name):
    sp = create_space(space_name)
    for arch in _archs(sp):
        with torch.device("meta"):  # exact counts without allocating AutoFormer-S weights
            net = build_from_config({"type": "vit", **sp.static_config(arch)})
            counter = FlopCounterMode(display=False)
            with counter:
                net(torch.empty(1, sp.in_chans, sp.resolution, sp.resolution))
        assert counter.get_total_flops() == 2 * sp.macs(arch)
        assert sum(p.numel() for p in net.parameters()) == sp.params(arch)


def test_mean_pool_variant_costs_match_export():
    sp = create_space("vit_tiny", pool="mean")
    net = create_supernet("vit", sp).eval()
    arch = sp.sample(3)
    static = net.export(arch).module
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad(), net.use(arch):
        assert torch.allclose(static(x), net(x), atol=1e-5)
    assert sum(p.numel() for p in static.parameters()) == sp.params(arch)


# -- supernet -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"mos_experts": 2, "mos_mode": "neuron", "mos_layers": ["fc1", "fc2", "q"]}])
def test_every_parameter_gets_a_gradient_at_max_arch(kw):
    net = create_supernet("vit", "vit_tiny", **kw).train()
    net(torch.randn(4, 1, 28, 28)).logsumexp(1).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_min_arch_touches_only_prefixes_and_active_blocks():
    net = create_supernet("vit", "vit_tiny").train()
    sp = net.space
    arch = sp.min_arch()
    net.set_arch(arch)
    net(torch.randn(4, 1, 28, 28)).logsumexp(1).sum().backward()
    e, w, hid = arch.embed, arch.heads[0] * sp.head_dim, sp.hidden(arch.embed, arch.mlp[0])
    blk = net.blocks[0]
    for g, box in [(blk.attn.q.linear.weight.grad, (w, e)), (blk.attn.proj.linear.weight.grad, (e, w)),
                   (blk.mlp.fc1.linear.weight.grad, (hid, e)), (blk.mlp.fc2.linear.weight.grad, (e, hid)),
                   (net.head.linear.weight.grad, (sp.n_classes, e))]:
        assert g[: box[0], : box[1]].abs().sum() > 0
        outside = g.clone()
        outside[: box[0], : box[1]] = 0
        assert outside.abs().sum() == 0
    assert net.embed.pos_embed.grad[..., e:].abs().sum() == 0
    assert all(p.grad is None for b in net.blocks[1:] for p in b.parameters())


def test_export_computes_the_supernet_output():
    net = _perturbed()
    for arch in _archs(net.space):
        x = torch.randn(3, 1, 28, 28)
        with torch.no_grad(), net.use(arch):
            ref = net(x)
        ex = net.export(arch)
        assert ex.config["type"] == "vit" and ex.arch == arch
        assert torch.allclose(ex.module.eval()(x), ref, atol=1e-5)


def test_onnx_and_reloaded_subnets_compute_the_supernet_output(tmp_path):
    net = _perturbed(1)
    sp = net.space
    for i, arch in enumerate([sp.min_arch(), sp.max_arch(), sp.sample(7)]):
        x = torch.randn(3, 1, 28, 28)
        with torch.no_grad(), net.use(arch):
            ref = net(x)
        ex = net.export(arch)
        out = save_subnet(tmp_path / f"s{i}", ex.module, ex.config, {"arch": arch.id},
                          onnx_input_shape=(1, 1, 28, 28))
        assert torch.allclose(load_subnet(out).module(x), ref, atol=1e-5)
        got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-4)


def test_depth_submodels_share_the_head_and_differ_only_by_blocks():
    net = _perturbed()
    sp = net.space
    a = sp.max_arch()
    shallow = ViTArch(embed=a.embed, depth=2, heads=a.heads, mlp=a.mlp)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad(), net.use(shallow):
        y_shallow = net(x)
    with torch.no_grad(), net.use(a):
        for blk in net.blocks[2:]:  # zero each residual branch's output layer: blocks 3 and 4 become identities
            for layer in (blk.attn.proj.linear, blk.mlp.fc2.linear):
                layer.weight.zero_()
                layer.bias.zero_()
        # The deep model now computes exactly what the shallow one does: same embedding, blocks, norm and head.
        assert torch.allclose(net(x), y_shallow, atol=1e-6)


def test_spec_round_trip_and_bad_arguments():
    net = create_supernet("vit", "vit_tiny", mos_experts=2, mos_mode="neuron")
    again = supernet_from_spec(net.full_spec())
    assert again.spec() == net.spec() and again.space == net.space
    assert sorted(again.state_dict()) == sorted(net.state_dict())
    with pytest.raises(TypeError, match="ViTSpace"):
        create_supernet("vit", "nb201_tiny")
    with pytest.raises(ValueError, match="mos_layers"):
        create_supernet("vit", "vit_tiny", mos_experts=2, mos_layers=["fc3"])
    with pytest.raises(ValueError, match="mos_mode"):
        create_supernet("vit", "vit_tiny", mos_experts=2, mos_mode="token")


# -- the library's contract suites ----------------------------------------------------------------
class TestViTTinySpaceContract(SearchSpaceContract):
    space = create_space("vit_tiny")


class TestViTSmallSpaceContract(SearchSpaceContract):
    space = create_space("vit_small")


@pytest.mark.parametrize("kw", [{}, {"mos_experts": 2, "mos_mode": "neuron"}], ids=["plain", "mos"])
class TestViTSupernetContract(SupernetContract):
    @pytest.fixture(autouse=True)
    def _bind(self, kw: dict) -> None:
        self._kw = kw

    def make_supernet(self):
        torch.manual_seed(0)
        return create_supernet("vit", "vit_tiny", **self._kw)
