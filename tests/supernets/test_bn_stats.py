"""One-pass batch statistics of BN recalibration: same statistics as torch's kernel, exact fallback, clean exit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import supernets.bn_stats as bn_stats
from search_spaces import create_space
from supernets import bn_recalibration, create_supernet, recalibrate_bn
from supernets.bn_stats import batch_norm, one_pass_moments
from supernets.ops import ElasticBatchNorm2d


def _running_stats(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.clone() for n, t in net.state_dict().items() if "running" in n or "num_batches" in n}


def test_one_pass_moments_match_torch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, 6, 7, generator=g) * torch.linspace(0.5, 3, 5)[:, None, None] + 0.7
    mean, var, count = one_pass_moments(x)
    ref_var, ref_mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    assert count == 8 * 6 * 7
    assert torch.allclose(mean, ref_mean, atol=1e-6) and torch.allclose(var, ref_var, rtol=1e-5)


def test_one_pass_moments_in_cache_sized_blocks_match_torch(monkeypatch):
    monkeypatch.setattr(bn_stats, "CHUNK_BYTES", 6000)  # 16x3 rows of 300 floats in blocks of 5, the last one 3
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 15, 20, generator=g) * torch.tensor([0.5, 1.0, 2.0])[:, None, None] - 0.3
    assert x.size(2) * x.size(3) >= bn_stats.CHUNK_MIN_ROW and x.numel() * 4 > 4 * bn_stats.CHUNK_BYTES
    mean, var, count = one_pass_moments(x)
    ref_var, ref_mean = torch.var_mean(x.double(), dim=(0, 2, 3), correction=0)
    assert count == 16 * 15 * 20
    torch.testing.assert_close(mean.double(), ref_mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(var.double(), ref_var, rtol=1e-5, atol=0)


@pytest.mark.parametrize("case", ["large_mean", "channels_last", "single_value"])
def test_one_pass_moments_decline_what_they_cannot_do_exactly(case):
    x = torch.randn(4, 3, 5, 5)
    if case == "large_mean":
        x[:, 1] += 1000.0  # E[x^2] - E[x]^2 would cancel: torch's two-pass kernel must be used
    elif case == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = x[:1, :, :1, :1].contiguous()
    assert one_pass_moments(x) is None


def test_batch_norm_without_autograd_updates_running_stats_like_torch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, 9, 9, generator=g) * 2 - 1
    w, b = torch.rand(4, generator=g) + 0.5, torch.randn(4, generator=g)
    rm, rv = torch.randn(4, generator=g), torch.rand(4, generator=g) + 0.5
    rm_ref, rv_ref = rm.clone(), rv.clone()
    with torch.no_grad():
        out = batch_norm(x, rm, rv, w, b, True, 0.25, 1e-5)
        ref = F.batch_norm(x, rm_ref, rv_ref, w, b, True, 0.25, 1e-5)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(rm, rm_ref, atol=1e-6) and torch.allclose(rv, rv_ref, rtol=1e-5)


def test_batch_norm_with_autograd_is_torchs_kernel():
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    batch_norm(x, torch.zeros(3), torch.ones(3), None, None, True, 0.1, 1e-5).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name,space_name", [("ofa_mbv3", "ofa_mbv3_tiny"), ("nb201", "nb201_tiny")])
def test_recalibration_gives_torchs_statistics(name, space_name, monkeypatch):
    torch.manual_seed(0)
    space = create_space(space_name)
    net = create_supernet(name, space)
    arch = space.sample(3)  # a random arch: elastic BNs run on channel prefixes
    net.set_arch(arch)
    res = getattr(arch, "r", getattr(space, "resolution", None))
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(8, space.in_chans, res, res, generator=g) * 1.5 + 0.3 for _ in range(3)]
    recalibrate_bn(net, batches)
    fast = _running_stats(net)
    monkeypatch.setattr(bn_stats, "MIN_RELATIVE_VARIANCE", float("inf"))  # every layer takes torch's kernel
    recalibrate_bn(net, batches)
    for key, ref in _running_stats(net).items():
        assert torch.allclose(fast[key], ref, rtol=1e-4, atol=1e-5), key


def test_recalibration_hooks_without_patching_forward_and_removes_them_even_on_error():
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny")
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    with pytest.raises(RuntimeError), bn_recalibration(net):
        assert net.stem.bn._forward_pre_hooks and "forward" not in vars(net.stem.bn)
        with torch.no_grad():
            net.set_arch(net.space.max_arch())
            net(torch.randn(4, 3, 32, 32))
        raise RuntimeError("boom")
    assert not any("forward" in vars(m) or m._forward_pre_hooks or m._forward_hooks for m in net.modules())
    after = net.state_dict()
    assert all(after[k].shape == v.shape for k, v in before.items())  # every buffer swapped back, none left swapped


def _fused_state(monkeypatch, **consts):
    monkeypatch.setattr(bn_stats, "_fused", None)
    monkeypatch.setattr(bn_stats, "_fused_failed", False)
    monkeypatch.setattr(bn_stats, "_use_fused", True)
    for name, value in consts.items():
        monkeypatch.setattr(bn_stats, name, value)


def test_compiled_one_read_moments_match_torch_with_long_rows_cut_in_pieces(monkeypatch):
    _fused_state(monkeypatch, FUSED_MIN_BYTES=0, FUSED_MAX_ROW=100)  # rows of 300 are reduced as 3 pieces of 100
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 4, 15, 20, generator=g) * torch.tensor([0.5, 1.0, 2.0, 4.0])[:, None, None] + 0.4
    calls = []
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(lambda r: calls.append(r.shape) or fn(r), **kw))
    mean, var, count = one_pass_moments(x)
    assert calls == [torch.Size([6 * 4 * 3, 100])]  # the compiled kernel ran, on the cut rows
    ref_var, ref_mean = torch.var_mean(x.double(), dim=(0, 2, 3), correction=0)
    assert count == 6 * 15 * 20
    torch.testing.assert_close(mean.double(), ref_mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(var.double(), ref_var, rtol=1e-5, atol=0)


def test_compile_failure_warns_once_and_falls_back_to_two_reductions(monkeypatch):
    _fused_state(monkeypatch, FUSED_MIN_BYTES=0)

    def no_compiler(rows: torch.Tensor) -> None:
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or no_compiler)
    x = torch.randn(5, 3, 8, 8)
    with pytest.warns(RuntimeWarning, match="No working C\\+\\+ compiler"):
        first = one_pass_moments(x)
    second = one_pass_moments(x)  # no second attempt, no second warning
    assert len(compiled) == 1 and bn_stats._fused_failed
    ref_var, ref_mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    for mean, var, _ in (first, second):
        assert torch.allclose(mean, ref_mean, atol=1e-6) and torch.allclose(var, ref_var, rtol=1e-5)


def test_use_fused_kernel_false_keeps_the_compiled_kernel_off(monkeypatch):
    _fused_state(monkeypatch, FUSED_MIN_BYTES=0)
    monkeypatch.setenv("NAS_FUSED_BN_STATS", "1")  # the old environment switch is not read
    bn_stats.use_fused_kernel(False)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: pytest.fail("torch.compile must not be called"))
    x = torch.randn(4, 3, 6, 6)
    mean, _, _ = one_pass_moments(x)
    assert torch.allclose(mean, x.mean((0, 2, 3)), atol=1e-6)


@pytest.mark.parametrize("width", [6, 4])  # full width (the inner BN's own path) and a channel prefix
@pytest.mark.parametrize("mode", ["eval", "recalibrate"])
def test_inplace_elastic_bn_writes_into_its_input_only_without_autograd(width, mode, monkeypatch):
    monkeypatch.setattr(ElasticBatchNorm2d, "INPLACE_MIN_NUMEL", 8 * 4 * 5 * 5)  # a prefix input just reaches it
    g = torch.Generator().manual_seed(3)
    ref, inplace = ElasticBatchNorm2d(6), ElasticBatchNorm2d(6, inplace=True)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean"):
            getattr(ref.bn, name).copy_(torch.randn(6, generator=g))
        ref.bn.running_var.copy_(torch.rand(6, generator=g) + 0.5)
    inplace.load_state_dict(ref.state_dict())
    for bn in (ref, inplace):
        bn.bn.train(mode == "recalibrate")
        bn.bn.momentum = None
    x = torch.randn(8, width, 5, 5, generator=g) * 2 + 1
    with torch.no_grad():
        expected = ref(x.clone())
        given = x.clone()
        out = inplace(given)
    assert out.data_ptr() == given.data_ptr()  # normalised into the input
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(inplace.state_dict(), ref.state_dict())
    given = x.clone().requires_grad_()
    out = inplace(given)  # with autograd: a new tensor, the input untouched, gradients flow
    assert out.data_ptr() != given.data_ptr() and torch.equal(given.detach(), x)
    out.square().sum().backward()
    assert given.grad is not None and given.grad.abs().sum() > 0


def test_small_inputs_stay_out_of_place_where_writing_in_place_costs_more():
    bn = ElasticBatchNorm2d(4, inplace=True).eval()
    x = torch.randn(1, 4, 3, 3)
    assert x.numel() < ElasticBatchNorm2d.INPLACE_MIN_NUMEL
    with torch.no_grad():
        out = bn(x)
    assert out.data_ptr() != x.data_ptr()


def test_inplace_and_compiled_recalibration_match_the_plain_path_end_to_end(monkeypatch):
    """OFA-tiny with every BN in place and the compiled kernel on every layer: same statistics and outputs."""
    torch.manual_seed(0)
    space = create_space("ofa_mbv3_tiny")
    net = create_supernet("ofa_mbv3", space)
    arch = space.sample(5)
    net.set_arch(arch)
    g = torch.Generator().manual_seed(4)
    batches = [torch.randn(6, space.in_chans, arch.r, arch.r, generator=g) for _ in range(2)]

    def recalibrated_outputs() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        recalibrate_bn(net, batches)
        net.eval()
        with torch.no_grad():
            return _running_stats(net), net(batches[0])

    _fused_state(monkeypatch, FUSED_MIN_BYTES=0)
    monkeypatch.setattr(ElasticBatchNorm2d, "INPLACE_MIN_NUMEL", 0)
    fast_stats, fast_out = recalibrated_outputs()
    bn_stats.use_fused_kernel(False)
    for m in net.modules():
        if isinstance(m, ElasticBatchNorm2d):
            monkeypatch.setattr(m, "inplace", False)
    ref_stats, ref_out = recalibrated_outputs()
    assert fast_stats.keys() == ref_stats.keys()
    for key, ref in ref_stats.items():
        torch.testing.assert_close(fast_stats[key], ref, rtol=1e-5, atol=1e-6, msg=key)
    torch.testing.assert_close(fast_out, ref_out, rtol=1e-4, atol=1e-5)
