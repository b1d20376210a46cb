"""Registry sweep over supernets on tiny spaces: forward/backward, export equivalence, sorting, BN recal."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_spaces import create_space
from search_spaces.errors import BadInputError
from supernets import (
    SubnetFormatError,
    bn_recalibration,
    create_supernet,
    load_subnet,
    recalibrate_bn,
    recalibrated,
    save_subnet,
)
from supernets.ops import ElasticConv2d

CASES = [("ofa_mbv3", "ofa_mbv3_tiny"), ("nb201", "nb201_tiny")]


def _resolution(space, arch):
    return getattr(arch, "r", getattr(space, "resolution", None))


def _perturbed(name, space_name, seed=0):
    """A supernet whose BN statistics, affine params and kernel matrices are not at their init values."""
    torch.manual_seed(seed)
    net = create_supernet(name, space_name)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _archs(space):
    rng = np.random.default_rng(0)
    return [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(4)]


@pytest.mark.parametrize("name,space_name", CASES)
def test_every_active_parameter_gets_a_gradient(name, space_name):
    net = create_supernet(name, space_name).train()
    sp = net.space
    arch = sp.max_arch()
    net.set_arch(arch)
    r = _resolution(sp, arch)
    net(torch.randn(4, sp.in_chans, r, r)).logsumexp(1).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    if name == "nb201":  # the max arch uses avg_pool on every edge: parameter-free edge ops have no grads
        missing = [n for n in missing if ".edges." not in n]
    # At kernel 7 the kernel-transform matrices are not on the path; they are checked below.
    assert [n for n in missing if "matrices" not in n] == []


def test_kernel_transform_matrices_receive_gradients_at_small_kernels():
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny").train()
    a = net.space.max_arch()
    arch = type(a)(ks=tuple(3 for _ in a.ks), e=a.e, d=a.d, r=a.r)
    net.set_arch(arch)
    net(torch.randn(2, 1, a.r, a.r)).logsumexp(1).sum().backward()
    for blk in net.blocks:
        for m in blk.dw_conv.matrices.values():
            assert m.grad is not None and m.grad.abs().sum() > 0


def test_min_arch_leaves_inactive_blocks_without_gradient():
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny").train()
    sp = net.space
    arch = sp.min_arch()
    net.set_arch(arch)
    net(torch.randn(2, 1, arch.r, arch.r)).sum().backward()
    per = sp.max_depth
    for i, blk in enumerate(net.blocks):
        used = i % per < arch.d[i // per]
        assert (blk.project_conv.conv.weight.grad is not None) == used
        if used:  # only the active prefix of the middle channels is touched
            mid = sp.mid_channels(blk.in_c, arch.e[i])
            g = blk.expand_conv.conv.weight.grad
            assert g[mid:].abs().sum() == 0 and g[:mid].abs().sum() > 0


@pytest.mark.parametrize("name,space_name", CASES)
def test_export_onnx_and_reload_compute_the_supernet_output(name, space_name, tmp_path):
    net = _perturbed(name, space_name)
    sp = net.space
    for i, arch in enumerate(_archs(sp)):
        r = _resolution(sp, arch)
        x = torch.randn(3, sp.in_chans, r, r)
        with torch.no_grad(), net.use(arch):
            ref = net(x)
        ex = net.export(arch)
        static = ex.module.eval()
        assert torch.allclose(static(x), ref, atol=1e-5)
        out = save_subnet(tmp_path / f"s{i}", static, ex.config, {"arch": arch.id},
                          onnx_input_shape=(1, sp.in_chans, r, r))
        loaded = load_subnet(out)
        assert torch.allclose(loaded.module(x), ref, atol=1e-5)
        sess = ort.InferenceSession(str(out / "model.onnx"))
        got = sess.run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-4)


@pytest.mark.parametrize("space_name", ["ofa_mbv3", "ofa_mbv3_w12"])
def test_full_size_ofa_export_matches(space_name):
    net = _perturbed("ofa_mbv3", space_name)
    sp = net.space
    for arch in (sp.min_arch(), sp.sample(0)):
        x = torch.randn(1, 3, 128, 128)
        with torch.no_grad(), net.use(arch):
            ref = net(x)
            assert torch.allclose(net.export(arch).module.eval()(x), ref, atol=1e-4)


@pytest.mark.parametrize("name,space_name", CASES)
def test_analytic_macs_and_params_match_counted(name, space_name):
    net = create_supernet(name, space_name)
    sp = net.space
    for arch in _archs(sp):
        static = net.export(arch).module.eval()
        r = _resolution(sp, arch)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            static(torch.randn(1, sp.in_chans, r, r))
        assert counter.get_total_flops() == 2 * sp.macs(arch)
        assert sum(p.numel() for p in static.parameters()) == sp.params(arch)


def test_channel_sorting_keeps_function_and_nesting():
    net = _perturbed("ofa_mbv3", "ofa_mbv3_tiny")
    sp = net.space
    small = sp.sample(2)
    small = type(small)(ks=small.ks, e=tuple(None if e is None else sp.expands[0] for e in small.e), d=small.d,
                        r=small.r)
    x = torch.randn(2, 1, 32, 32)
    before = {}
    for arch in (sp.max_arch(), small):
        with torch.no_grad(), net.use(arch):
            before[arch] = net(x[..., : arch.r, : arch.r])
    net.sort_channels(keep_expands=[sp.expands[0]])
    for arch, ref in before.items():
        with torch.no_grad(), net.use(arch):
            assert torch.allclose(net(x[..., : arch.r, : arch.r]), ref, atol=1e-5)
    # The sort really re-orders: outside the kept prefix, importance is non-increasing.
    blk = net.blocks[0]
    imp = blk.project_conv.conv.weight.abs().sum(dim=(0, 2, 3))
    k = sp.mid_channels(blk.in_c, sp.expands[0])
    assert torch.all(imp[k:-1] >= imp[k + 1 :]) and torch.all(imp[: k - 1] >= imp[1:k])


def test_channel_sorting_without_keep_widths_is_a_full_sort():
    net = _perturbed("ofa_mbv3", "ofa_mbv3_tiny")
    arch = net.space.max_arch()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad(), net.use(arch):
        ref = net(x)
        net.sort_channels()
        assert torch.allclose(net(x), ref, atol=1e-5)
    imp = net.blocks[3].project_conv.conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(imp[:-1] >= imp[1:])


def test_bn_recalibration_estimates_subset_statistics_and_restores_modes():
    net = _perturbed("ofa_mbv3", "ofa_mbv3_tiny").train()
    arch = net.space.sample(4)
    net.set_arch(arch)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(16, 1, arch.r, arch.r, generator=g) * 2 + 1 for _ in range(4)]
    recalibrate_bn(net, batches)
    assert net.training and all(m.training for m in net.modules())
    stem_bn = net.stem.bn
    # The stem sees raw images: its running mean is the mean of the per-batch means of its conv output.
    with torch.no_grad():
        means = torch.stack([net.stem.conv(b).mean((0, 2, 3)) for b in batches]).mean(0)
    assert torch.allclose(stem_bn.running_mean, means, atol=1e-5)
    assert stem_bn.momentum == 0.1


def test_bn_recalibration_restores_state_on_error():
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny").eval()
    with pytest.raises(RuntimeError), bn_recalibration(net):
        raise RuntimeError("boom")
    assert not any(m.training for m in net.modules())
    assert all(m.momentum == 0.1 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_recalibrated_context_puts_statistics_back():
    net = _perturbed("ofa_mbv3", "ofa_mbv3_tiny")
    before = net.stem.bn.running_mean.clone()
    with recalibrated(net, [torch.randn(8, 1, 32, 32)]):
        assert not torch.allclose(net.stem.bn.running_mean, before)
    assert torch.equal(net.stem.bn.running_mean, before)


def test_recalibration_needs_data():
    net = create_supernet("nb201", "nb201_tiny")
    with pytest.raises(ValueError, match="at least one batch"):
        recalibrate_bn(net, [])


def test_use_restores_previous_arch_even_on_error():
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny")
    sp = net.space
    a, b = sp.sample(0), sp.sample(1)
    net.set_arch(a)
    with pytest.raises(KeyError), net.use(b):
        assert net.arch == b
        raise KeyError("x")
    assert net.arch == a


def test_save_refuses_non_empty_dir_and_detects_tampering(tmp_path):
    net = create_supernet("nb201", "nb201_tiny")
    ex = net.export(net.space.sample(0))
    out = save_subnet(tmp_path / "sub", ex.module, ex.config, {})
    with pytest.raises(BadInputError, match="overwrite"):
        save_subnet(out, ex.module, ex.config, {})
    save_subnet(out, ex.module, ex.config, {"again": 1}, overwrite=True)
    assert load_subnet(out).metadata["again"] == 1
    weights = out / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(SubnetFormatError, match="truncated or was modified"):
        load_subnet(out)
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    weights.write_bytes(bytes(flipped))
    with pytest.raises(SubnetFormatError, match="sha256"):
        load_subnet(out)


def test_save_leaves_nothing_half_written_on_failure(tmp_path):
    net = create_supernet("nb201", "nb201_tiny")
    ex = net.export(net.space.sample(0))
    with pytest.raises(TypeError):  # config is not JSON-able: fails after the weights were written
        save_subnet(tmp_path / "sub", ex.module, {"x": object()}, {})
    assert list(tmp_path.iterdir()) == []


def test_supernet_rejects_foreign_space_and_bad_arch():
    with pytest.raises(TypeError, match="OFAMobileNetV3Space"):
        create_supernet("ofa_mbv3", create_space("nb201_tiny"))
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny")
    a = net.space.max_arch()
    with pytest.raises(ValueError, match="r=30"):
        net.set_arch(type(a)(ks=a.ks, e=a.e, d=a.d, r=30))


def test_grad_free_forward_memo_follows_arch_and_weight_changes():
    """Eval forwards reuse memoised kernels; switching arch, an optimizer step, sorting or .data writes never
    leave a stale kernel behind (each result equals the same forward computed with autograd on)."""
    space = create_space("ofa_mbv3_tiny")
    net = _perturbed("ofa_mbv3", "ofa_mbv3_tiny").eval()
    x = torch.randn(2, space.in_chans, space.resolutions[0], space.resolutions[0])
    rng = np.random.default_rng(3)
    archs = [space.min_arch(), space.sample(rng), space.max_arch(), space.min_arch()]

    def check(arch) -> torch.Tensor:
        net.set_arch(arch)
        with torch.no_grad():
            memo = net(x)
        return torch.testing.assert_close(memo, net(x).detach()) or memo

    for arch in archs:
        check(arch)
    memos = [m._derived for m in net.modules() if hasattr(m, "_derived")]
    assert memos and all(d._value is not None for d in memos if d._key is not None)
    assert sum(d._key is not None for d in memos) > len(memos) // 2  # grad-free forwards did memoise
    before = check(archs[0])
    with torch.no_grad():  # an optimizer-style in-place update of every parameter, transform matrices included
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert not torch.allclose(check(archs[0]), before)
    net.sort_channels()
    check(archs[1])
    for p in net.parameters():
        p.data.mul_(0.9)  # invisible to version counters: clear_derived (or train()/eval()) drops the memo
    net.clear_derived()
    check(archs[1])
    net.train().eval()
    check(archs[2])


def test_grad_free_conv_memo_follows_a_bias_only_update():
    conv = ElasticConv2d(6, 5, bias=True)
    conv.set_active(3)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        before = conv(x)
        conv.conv.bias.add_(1.0)  # weight untouched: the memoised (weight, bias) pair must still be dropped
        after = conv(x)
    torch.testing.assert_close(after, before + 1.0)
    torch.testing.assert_close(after, conv(x).detach())


def test_folded_kernel_map_equals_ofa_crop_and_transform_chain():
    """K5 = centre5(W7) . M75 and K3 = centre3(K5) . M53 (OFA), computed as one folded matrix; also after the
    first use happened in inference mode (the cached crop indices must not be inference tensors)."""
    from supernets.ops import ElasticDepthwiseConv2d, sub_kernel

    torch.manual_seed(0)
    op = ElasticDepthwiseConv2d(24, (3, 5, 7), transform=True)
    with torch.no_grad():
        for m in op.matrices.values():
            m.add_(0.1 * torch.randn_like(m))

    def chain(op):
        w = op.conv.weight[: op.active_channels]
        for big, small in zip(op.kernels[::-1], op.kernels[-2::-1]):
            if big <= op.active_kernel:
                break
            w = sub_kernel(w, small)
            w = (w.reshape(-1, small * small) @ op.matrices[f"{big}to{small}"]).reshape(w.shape)
        return w

    x = torch.randn(2, 24, 9, 9)
    with torch.inference_mode():
        op.set_active(24, 3)
        op(x)
    for c, k in ((24, 3), (16, 5), (8, 3), (24, 7)):
        op.set_active(c, k)
        torch.testing.assert_close(op.active_weight(), chain(op))
    op.set_active(16, 3)
    op.zero_grad()
    op(x[:, :16]).square().sum().backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in op.matrices.values())
    assert op.conv.weight.grad[16:].abs().sum() == 0 and op.conv.weight.grad[:16, :, 2:5, 2:5].abs().sum() > 0
