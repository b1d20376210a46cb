from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.train.grad_attribution import gene_grad_norms, path_grad_norm
from nas.train.samplers.pada import DataImportance, PathImportance, logit_grad_norms, tau_ramp
from nas.train.samplers.shiftnas import ComplexityBins, ShiftNASBins, bin_val_losses
from search_spaces import create_space
from search_spaces.errors import MissingCapabilityError
from supernets import create_supernet
from supernets.bn import batch_statistics


def _valid(p: np.ndarray, floor: float = 0.0) -> bool:
    return bool(np.all(p >= floor - 1e-12) and abs(p.sum() - 1.0) < 1e-9)


def test_logit_grad_norm_matches_autograd():
    z = torch.randn(7, 10, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 10, (7,))
    torch.nn.functional.cross_entropy(z, y, reduction="sum").backward()
    np.testing.assert_allclose(logit_grad_norms(z.detach().numpy(), y.numpy()), z.grad.norm(dim=1).numpy())


def test_tau_ramp_and_caps():
    assert [tau_ramp(e, 4) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert tau_ramp(10, 4, tau_max=0.9) == 0.9
    with pytest.raises(ValueError, match="total_epochs"):
        tau_ramp(0, 0)


def test_path_importance_nb201_ties_edges_and_keeps_unused_choices():
    space = create_space("nb201_tiny")
    pi = PathImportance(space, total_epochs=2, floor=0.03)
    assert pi.n_groups == 1 and pi.sizes == [5]
    arch = space.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|")
    pi.observe(arch, [2.0, 4.0, 0.0, 1.0, 0.0, 6.0])
    imp = pi.importance[0]
    # conv3x3 chosen on edges 0, 1, 5: (2 + 4 + 6) / 3; conv1x1 on edge 3; skip/none zero; avg_pool unused
    np.testing.assert_allclose(imp, [0.0, 0.0, 1.0, 4.0, 0.0])
    before_pool = imp[4]
    arch2 = space.parse("|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|none~2|")
    pi.observe(arch2, [3.0, 3.0, 3.0, 3.0, 3.0, 0.0])
    imp = pi.importance[0]
    assert imp[2] == pytest.approx(0.5 * 1.0 + 0.5 * 3.0)  # smoothed
    assert imp[3] == 4.0 and imp[4] == before_pool  # unused choices unchanged
    pi.end_epoch(1)  # tau reaches its cap 1 - K*floor
    p = pi.probs[0]
    assert _valid(p, floor=0.03)
    assert p[0] == pytest.approx(0.03) and p[3] > p[2] > p[1]
    assert np.all(pi.importance[0] == 0)


def test_path_sampling_is_deterministic_and_follows_probs():
    space = create_space("nb201_tiny")
    pi = PathImportance(space, total_epochs=1, floor=0.0)
    pi.probs[0] = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    assert pi.sample(np.random.default_rng(0)).ops == ("nor_conv_3x3",) * 6
    pi.probs[0] = np.array([0.1, 0.2, 0.3, 0.3, 0.1])
    a = [pi.sample(np.random.default_rng(5)) for _ in range(3)]
    b = [pi.sample(np.random.default_rng(5)) for _ in range(3)]
    assert a == b
    rng = np.random.default_rng(1)
    counts = np.bincount(np.concatenate([space.encode(pi.sample(rng)) for _ in range(400)]), minlength=5)
    np.testing.assert_allclose(counts / counts.sum(), pi.probs[0], atol=0.03)


def test_path_importance_untied_on_ofa_space_respects_inactive_genes():
    space = create_space("ofa_mbv3_tiny")
    pi = PathImportance(space, total_epochs=3, floor=0.01, tie="none")
    assert pi.n_groups == len(space.genes())
    arch = space.min_arch()
    pi.observe(arch, np.arange(len(space.genes()), dtype=float) + 1.0)
    active = space.active(arch)
    seen = np.array([s.any() for s in pi.seen])
    np.testing.assert_array_equal(seen, active)
    pi.end_epoch(0)
    assert all(_valid(p, 0.01) for p in pi.probs)
    space.validate(pi.sample(np.random.default_rng(0)))


def test_nb201_attribution_credits_only_the_chosen_ops():
    space = create_space("nb201_tiny")
    net = create_supernet("nb201", space)
    arch = space.parse("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    with net.use(arch):
        net(torch.randn(4, 1, 28, 28)).square().mean().backward()
    g = gene_grad_norms(net, arch)
    assert g[0] > 0 and g[2] > 0 and g[5] > 0
    assert g[1] == 0 and g[3] == 0 and g[4] == 0
    expect0 = sum(float(p.grad.norm()) for n, p in net.named_parameters() if ".edges.0.nor_conv_3x3." in n)
    assert g[0] == pytest.approx(expect0)
    assert path_grad_norm(net) > g.sum()


def test_data_importance_distribution_and_unbiased_weights():
    n = 50
    di = DataImportance(n, total_epochs=2, unbiased=True, min_uniform=0.1)
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 10, n)
    # first half confidently right (d ~ 0), second half confidently wrong (d ~ sqrt 2)
    logits = 10.0 * np.eye(10)[np.where(np.arange(n) < n // 2, targets, (targets + 1) % 10)]
    logits += rng.normal(size=(n, 10))
    d = di.observe(np.arange(n), logits, targets)
    idx, w = di.end_epoch(1, np.random.default_rng(0))
    p = di.probs
    assert _valid(p, floor=0.1 / n) and idx.shape == (n,) and w.shape == (n,)
    np.testing.assert_allclose(p, 0.9 * d / d.sum() + 0.1 / n)
    assert float((p * (1.0 / (n * p))).sum()) == pytest.approx(1.0)  # E_p[w] = 1 exactly
    many = np.random.default_rng(3).choice(n, size=200_000, p=p)
    assert di.weights(many).mean() == pytest.approx(1.0, abs=0.02)
    # hard examples are drawn more often
    assert np.sum(idx < n // 2) < 10
    di.observe([3], logits[:1], targets[:1])
    assert di.importance[4] == 0.0 and di.seen.sum() == 1


def test_data_importance_prioritised_has_no_weights_and_rejects_bad_indices():
    di = DataImportance(5, total_epochs=3)
    idx, w = di.end_epoch(0, np.random.default_rng(0))
    assert w is None and _valid(di.probs)
    with pytest.raises(IndexError, match=r"\[0, 4\]"):
        di.observe([5], np.zeros((1, 3)), np.zeros(1, dtype=int))
    with pytest.raises(ValueError, match="min_uniform"):
        DataImportance(5, total_epochs=1, unbiased=True, min_uniform=0.0)


def test_state_round_trip_resumes_exactly():
    space = create_space("nb201_tiny")
    pi, di = PathImportance(space, total_epochs=3), DataImportance(20, total_epochs=3, unbiased=True)
    rng = np.random.default_rng(0)
    for _ in range(3):
        pi.observe(pi.sample(rng), rng.random(6))
        di.observe(rng.integers(0, 20, 8), rng.normal(size=(8, 10)), rng.integers(0, 10, 8))
    pi.end_epoch(0)
    pi.observe(pi.sample(rng), rng.random(6))
    pi2, di2 = PathImportance(space, total_epochs=3), DataImportance(20, total_epochs=3, unbiased=True)
    pi2.load_state_dict(pi.state_dict())
    di2.load_state_dict(di.state_dict())
    r1, r2 = np.random.default_rng(9), np.random.default_rng(9)
    assert [pi.sample(r1) for _ in range(5)] == [pi2.sample(r2) for _ in range(5)]
    pi.end_epoch(1), pi2.end_epoch(1)
    np.testing.assert_array_equal(pi.probs[0], pi2.probs[0])
    (i1, w1), (i2, w2) = di.end_epoch(0, np.random.default_rng(2)), di2.end_epoch(0, np.random.default_rng(2))
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(w1, w2)


def test_complexity_bins_conditional_sampling():
    space = create_space("nb201_tiny")
    bins = ComplexityBins(space, n_bins=6, n_probe=256, seed=0, max_tries=64)
    assert bins.edges[0] == space.macs(space.min_arch()) < bins.edges[-1]
    rng = np.random.default_rng(0)
    hits = [bins.sample_in_bin(2, rng) for _ in range(20)]
    assert all(bins.bin_of(space.macs(a)) == 2 for a, hit in hits if hit) and sum(h for _, h in hits) >= 15
    top = [bins.sample_in_bin(5, rng)[0] for _ in range(20)]
    mid = [bins.sample_in_bin(1, rng)[0] for _ in range(20)]
    assert min(space.macs(a) for a in top) > max(space.macs(a) for a in mid)


def test_shiftnas_histogram_moves_toward_favoured_bins_and_rule_sign():
    space = create_space("nb201_tiny")
    bins = ComplexityBins(space, n_bins=5, n_probe=256, seed=0, max_tries=32)
    sb = ShiftNASBins(bins, lr=1.0, floor=0.02, probes_per_bin=1)
    assert _valid(sb.probs(), 0.02) and np.allclose(sb.probs(), 0.2)
    rng = np.random.default_rng(0)
    before = np.mean([space.macs(sb.sample(rng)[0]) for _ in range(150)])
    assert sb.update([2.0, 2.0, 2.0, 2.0, 2.0]) is None
    for _ in range(3):  # the top bin keeps improving, the bottom bin gets worse
        sb.update(sb.prev_losses + np.array([0.1, 0.0, 0.0, 0.0, -0.3]))
    p = sb.probs()
    assert _valid(p, 0.02) and p.argmax() == 4 and p.argmin() == 0
    rng = np.random.default_rng(0)
    draws = [sb.sample(rng) for _ in range(150)]
    assert np.mean([space.macs(a) for a, _ in draws]) > before
    assert np.bincount([k for _, k in draws], minlength=5).argmax() == 4


def test_shiftnas_state_round_trip_and_val_losses_leave_bn_untouched():
    space = create_space("nb201_tiny")
    sb = ShiftNASBins(ComplexityBins(space, n_bins=3, n_probe=64, seed=0), probes_per_bin=1)
    net = create_supernet("nb201", space)
    batches = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    losses = bin_val_losses(net, sb.probes, batches)
    assert losses.shape == (3,) and np.all(losses > 0) and net.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    with batch_statistics(net):
        assert not net.training
    sb.update(losses)
    sb.update(losses * np.array([1.0, 0.9, 1.1]))
    sb2 = ShiftNASBins(ComplexityBins(space, n_bins=3, n_probe=64, seed=0), probes_per_bin=1, probe_seed=7)
    sb2.load_state_dict(sb.state_dict())
    assert sb2.probes == sb.probes and sb2.n_updates == 1
    np.testing.assert_array_equal(sb2.logits, sb.logits)
    r1, r2 = np.random.default_rng(4), np.random.default_rng(4)
    assert [sb.sample(r1) for _ in range(5)] == [sb2.sample(r2) for _ in range(5)]


def test_mbv3_credits_each_block_gene_with_its_own_weights():
    space = create_space("ofa_mbv3_tiny")
    net = create_supernet("ofa_mbv3", space)
    arch = space.sample(np.random.default_rng(1))
    with net.use(arch):
        net(torch.randn(2, 1, arch.r, arch.r)).square().mean().backward()
    g = gene_grad_norms(net, arch)
    nb, on = space.n_stages * space.max_depth, space.active(arch)
    assert g.shape == (len(space.genes()),)
    assert np.all(g[~on] == 0) and np.all(g[on] > 0)
    i = next(i for i in range(nb) if on[i])
    blk = net.blocks[i]
    kernel = sum(float(p.grad.norm()) for m in (blk.dw_conv, blk.dw_bn) for p in m.parameters() if p.grad is not None)
    assert g[i] == pytest.approx(kernel) and g[nb + i] != pytest.approx(kernel)
    assert g[-1] == pytest.approx(path_grad_norm(net)) and g[-1] > g[:nb].max()  # r: the whole path
    with pytest.raises(MissingCapabilityError, match="gene_grad_norms"):
        gene_grad_norms(torch.nn.Linear(2, 2), arch)
    pi = PathImportance(space, total_epochs=1, floor=0.01)
    pi.observe(arch, g)
    pi.end_epoch(0)
    assert all(_valid(p, 0.01) for p in pi.probs)


def test_vit_credits_heads_and_mlp_genes_with_their_block():
    space = create_space("vit_tiny")
    net = create_supernet("vit", space)
    arch = space.sample(np.random.default_rng(2))
    with net.use(arch):
        net(torch.randn(2, 1, 28, 28)).square().mean().backward()
    g = gene_grad_norms(net, arch)
    nb, on = space.max_depth, space.active(arch)
    assert np.all(g[~on] == 0) and np.all(g[on] > 0)
    attn = sum(float(p.grad.norm()) for m in (net.blocks[0].norm1, net.blocks[0].attn) for p in m.parameters())
    assert g[2] == pytest.approx(attn)
    assert g[1] == pytest.approx(g[2:2 + arch.depth].sum() + g[2 + nb:2 + nb + arch.depth].sum())


def test_quantised_supernet_credits_bit_genes_with_their_layer():
    from supernets.quant import calibrate

    space = create_space("quant_nb201_tiny")
    net = create_supernet("quant", space)
    joint = space.sample(np.random.default_rng(0))
    calibrate(net, torch.randn(8, *space.input_shape(joint)), steps=5)
    with net.use(joint):
        net(torch.randn(2, *space.input_shape(joint))).square().mean().backward()
    g = gene_grad_norms(net, joint)
    on = space.active(joint)
    assert g.shape == (len(space.genes()),) and np.all(g[~on] == 0) and np.all(g[on] >= 0)
    names = [gene.name for gene in space.genes()]
    slots = np.flatnonzero(space.lay.active(joint.arch))
    norms = {space.slots[i]: path_grad_norm(layer) for i, layer in zip(slots, net.binding.calls)}
    free = [n.split(":", 1)[1] for n in names if n.startswith("w_bits:")]
    for slot in free:
        if slot in norms:
            assert g[names.index(f"w_bits:{slot}")] == g[names.index(f"a_bits:{slot}")] == norms[slot]
    assert max(norms[s] for s in free if s in norms) > 0
    assert g[names.index("w_granularity")] == pytest.approx(sum(norms.values()))  # global modes: every layer
