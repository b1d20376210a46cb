"""SortedNet: nested grid and chain, prefix-only updates, the many-in-one sampler, search-free selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.data import DataModule
from nas.train import SAMPLERS, TrainConfig, Trainer, create_sampler
from nas.train.samplers.fixed import FixedArchSampler
from nas.train.samplers.sortednet import SortedNetSampler
from search_spaces import create_space
from search_spaces.sorted import SortedChain, sorted_grid
from supernets import create_supernet

CASES = [("vit", "vit_tiny"), ("ofa_mbv3", "ofa_mbv3_tiny")]


def _input(space, n=4):
    r = space.resolution if hasattr(space, "img_size") else space.resolutions[-1]
    return torch.randn(n, space.in_chans, r, r, generator=torch.Generator().manual_seed(0))


def _support(net, arch, x):
    """Per parameter: mask of the entries that get a non-zero gradient from ``arch``."""
    net.zero_grad(set_to_none=True)
    net.set_arch(arch)
    net(x).logsumexp(1).sum().backward()
    out = {n: (p.grad != 0) if p.grad is not None else torch.zeros_like(p, dtype=torch.bool)
           for n, p in net.named_parameters()}
    for n in [n for n in out if n.endswith("attn.k.linear.bias")]:
        # The key bias's gradient is zero in exact arithmetic (softmax ignores a per-query shift of the scores),
        # so read its prefix from the key weight's rows.
        out[n] = out[n.replace(".bias", ".weight")].any(1)
    return out


def _box(mask):
    """The smallest box [0, e_0) x [0, e_1) x ... anchored at the origin that holds every True entry."""
    box = torch.zeros_like(mask)
    if mask.any():
        box[tuple(slice(0, e) for e in (mask.nonzero().max(0).values + 1).tolist())] = True
    return box


def test_vit_chain_is_sorted_nested_and_monotone_in_cost():
    grid = sorted_grid(create_space("vit_tiny"))
    assert grid.names == ("depth", "embed", "heads", "mlp") and grid.shape == (4, 3, 3, 3) and len(grid) == 108
    chain = grid.chain()
    assert len(chain) == 1 + 3 + 2 + 2 + 2 and chain[0] == (0, 0, 0, 0) and chain[-1] == (3, 2, 2, 2)
    assert all(grid.nested(a, b) and sum(b) - sum(a) == 1 for a, b in zip(chain, chain[1:]))
    archs = [grid.arch(i) for i in chain]
    assert archs[0] == grid.space.min_arch() and archs[-1] == grid.space.max_arch()
    macs = [grid.space.macs(a) for a in archs]
    assert all(m1 < m2 for m1, m2 in zip(macs, macs[1:]))
    assert grid.chain(order=["embed", "depth"])[:3] == [(0, 0, 0, 0), (0, 1, 0, 0), (1, 1, 0, 0)]
    with pytest.raises(ValueError, match="grid dims"):
        grid.chain(order=["width"])


@pytest.mark.parametrize("name,space_name", CASES)
def test_sorted_chain_members_are_prefix_slices_of_each_other(name, space_name):
    torch.manual_seed(0)
    net = create_supernet(name, space_name)
    grid = sorted_grid(net.space)
    chain = grid.chain()
    exported = [net.export(grid.arch(i)).module.state_dict() for i in chain]
    checked = 0
    for (ia, sa), (ib, sb) in zip(zip(chain, exported), zip(chain[1:], exported[1:])):
        if name == "ofa_mbv3" and ia[0] != ib[0]:
            continue  # OFA's exported blocks are numbered consecutively; depth steps are checked in the step test
        assert set(sa) <= set(sb)
        for k, t in sa.items():  # every tensor of theta_i is the leading slice of theta_(i+1)'s tensor
            assert torch.equal(t, sb[k][tuple(slice(0, n) for n in t.shape)]), k
        checked += 1
    assert checked >= (len(chain) - 1 if name == "vit" else 2)


def test_vit_submodels_are_exactly_nested_prefix_boxes():
    torch.manual_seed(0)
    net = create_supernet("vit", "vit_tiny").train()
    grid = sorted_grid(net.space)
    archs = [grid.arch(i) for i in grid.chain()]
    x = _input(net.space)
    boxes = [{n: _box(m) for n, m in _support(net, a, x).items()} for a in archs]
    for arch, box in zip(archs, boxes):  # the gradient of each sub-model fills a prefix box of exactly its size
        assert sum(int(b.sum()) for b in box.values()) == net.space.params(arch)
    for small, big in zip(boxes, boxes[1:]):  # theta_1 subset theta_2 subset ... subset theta_N
        assert all(not (small[n] & ~big[n]).any() for n in small)


@pytest.mark.parametrize("name,space_name", CASES)
def test_a_step_on_the_smallest_changes_only_its_prefix(name, space_name):
    torch.manual_seed(0)
    net = create_supernet(name, space_name).train()
    grid = sorted_grid(net.space)
    smallest = grid.arch(grid.chain()[0])
    x, y = _input(net.space, 8), torch.arange(8) % net.space.n_classes
    prefix = {n: _box(m) for n, m in _support(net, smallest, x).items()}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.5)  # no momentum/decay: those move unused weights too
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    changed = {n: p.detach() != before[n] for n, p in net.named_parameters()}
    for n, c in changed.items():
        assert not (c & ~prefix[n]).any(), f"{n} changed outside the smallest sub-model's prefix"
    n_prefix, n_all = sum(int(m.sum()) for m in prefix.values()), sum(m.numel() for m in prefix.values())
    assert sum(int(c.sum()) for c in changed.values()) > 0.5 * n_prefix and n_prefix < 0.5 * n_all
    if name == "vit":
        e = smallest.embed
        assert torch.equal(net.blocks[0].mlp.fc1.linear.weight[:, e:], before["blocks.0.mlp.fc1.linear.weight"][:, e:])
        assert all(torch.equal(p, before[n]) for n, p in net.named_parameters() if n.startswith("blocks.1."))
    else:
        sp, mid = net.space, net.blocks[0].mid
        assert mid < net.blocks[0].expand_conv.conv.out_channels
        w = net.blocks[0].expand_conv.conv.weight
        assert torch.equal(w[mid:], before["blocks.0.expand_conv.conv.weight"][mid:]) and not torch.equal(w, before[
            "blocks.0.expand_conv.conv.weight"])
        unused = [f"blocks.{s * sp.max_depth + b}." for s in range(sp.n_stages) for b in range(1, sp.max_depth)]
        assert all(torch.equal(p, before[n]) for n, p in net.named_parameters() if n.startswith(tuple(unused)))


def test_sampler_draws_g_acc_tasks_deterministically_and_resumes():
    sp = create_space("vit_tiny")
    s = create_sampler("sortednet", sp, g_acc=3, seed=5)
    assert isinstance(s, SortedNetSampler) and "sortednet" in SAMPLERS
    plans = [s.plan(i, None) for i in range(4)]
    assert all(len(p) == 3 and all(t.weight == pytest.approx(1 / 3) for t in p) for p in plans)
    s2 = SortedNetSampler(sp, g_acc=3, seed=5)
    assert [p.archs for p in plans] == [s2.plan(i, None).archs for i in range(4)]
    state = s.state_dict()
    nxt = s.plan(4, None).archs
    s3 = SortedNetSampler(sp, g_acc=3, seed=99)
    s3.load_state_dict(state)
    assert s3.plan(4, None).archs == nxt
    assert all(t.weight == 1.0 for t in SortedNetSampler(sp, g_acc=2, normalize=False).plan(0, None))


def test_sampler_distribution_is_configurable():
    sp = create_space("vit_tiny")
    s = SortedNetSampler(sp, g_acc=1, probs={"depth": [0, 0, 0, 1], "embed": [1, 0, 0]}, seed=0)
    draws = np.array([s.draw() for _ in range(600)])
    assert set(draws[:, 0]) == {3} and set(draws[:, 1]) == {0}
    assert np.allclose(np.bincount(draws[:, 2], minlength=3) / 600, 1 / 3, atol=0.06)  # uniform by default
    c = SortedNetSampler(sp, distribution="chain", chain_weights=[1] + [0] * 9, seed=0)
    assert all(t.arch == sp.min_arch() for t in c.plan(0, None))
    with pytest.raises(ValueError, match="non-negative"):
        SortedNetSampler(sp, probs={"depth": [1, 1]})
    with pytest.raises(ValueError, match="unknown sorted dims"):
        SortedNetSampler(sp, dims=["depth", "width"])
    ends = SortedNetSampler(sp, g_acc=3, always=["smallest", "largest"], seed=0)
    chain = ends.chain_archs()
    for plan in (ends.plan(i, None) for i in range(20)):  # both ends in every step, one drawn sub-model
        assert plan.archs[:2] == [chain[0], chain[-1]] and len(plan) == 3
    with pytest.raises(ValueError, match="smallest"):
        SortedNetSampler(sp, g_acc=1, always=["smallest", "largest"])
    with pytest.raises(ValueError, match="smallest"):
        SortedNetSampler(sp, always=["middle"])
    cnn = SortedNetSampler(create_space("ofa_mbv3_tiny"), dims=["depth", "expand", "kernel"], fixed={"r": 28})
    assert len(cnn.chain) == 1 + 1 + 2 + 2 and all(a.r == 28 for a in cnn.chain_archs())


class _Blobs(DataModule):
    """Two learnable classes of 28x28 grey images (bright top half vs bright bottom half)."""

    name, in_chans, n_classes, image_size = "blobs", 1, 10, 28

    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, 1, 28, 28, generator=g) * 0.3
        self.x[self.y == 0, :, :14] += 1.0
        self.x[self.y == 1, :, 14:] += 1.0

    def split_size(self, split):
        return len(self.y)

    def get(self, split, indices):
        idx = torch.as_tensor(np.asarray(indices))
        return self.x[idx], self.y[idx]


def test_trainer_runs_sortednet_plans_and_fixed_arch_baseline(tmp_path):
    torch.manual_seed(0)
    net = create_supernet("vit", "vit_tiny")
    cfg = TrainConfig(epochs=2, batch_size=16, optimizer="adamw", lr=3e-3, weight_decay=0.0, device="cpu",
                      eval_every=0, progress=False, tensorboard=False, threads=1)
    sampler = SortedNetSampler(net.space, g_acc=2, seed=0)
    res = Trainer(net, _Blobs(), sampler, cfg, tmp_path / "sorted").fit()
    assert res.steps == 8
    lines = (tmp_path / "sorted" / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",")[4] == "loss_sorted" and len(lines) >= 2
    alone = create_supernet("vit", "vit_tiny")
    fixed = FixedArchSampler(alone.space, arch=alone.space.to_dict(alone.space.min_arch()))
    before = alone.blocks[1].mlp.fc1.linear.weight.detach().clone()
    Trainer(alone, _Blobs(), fixed, cfg, tmp_path / "alone").fit()
    assert torch.equal(alone.blocks[1].mlp.fc1.linear.weight, before)  # depth 1: block 2 never trained


def test_search_free_selection_under_macs_params_and_latency():
    sp = create_space("vit_tiny")
    grid = sorted_grid(sp)
    archs = [grid.arch(i) for i in grid.chain()]
    macs = np.array([sp.macs(a) for a in archs])
    chain = SortedChain.measure(sp, archs, "macs")
    assert chain.select(macs[4]).index == 4 and chain.select(macs[4] - 1).index == 3
    assert chain.select(1e12).arch == sp.max_arch()
    with pytest.raises(ValueError, match="smallest costs"):
        chain.select(macs[0] - 1)

    class Profile:  # any object with latency(archs): here 1 ms per 100k MACs, plus noise that breaks ties
        def latency(self, batch):
            return [sp.macs(a) / 1e5 + 0.01 * i for i, a in enumerate(batch)]

    lat = SortedChain.measure(sp, archs, Profile(), accuracy=np.linspace(70, 88, len(archs)))
    s = lat.select(10.0)
    assert lat.metric == "latency" and s.cost <= 10.0 and lat.costs[s.index + 1] > 10.0
    assert lat.select(10.0, by="accuracy").index == s.index
    params = SortedChain.measure(sp, archs, lambda space, a: [space.params(x) for x in a])
    assert params.select(sp.params(archs[2])).index == 2
    acc = np.array([70, 72, 71, 75, 76, 77, 78, 79, 80, 81.0])
    assert SortedChain(archs, macs, "macs", acc).monotone_fraction() == pytest.approx(8 / 9)
    with pytest.raises(ValueError, match="unknown cost metric"):
        SortedChain.measure(sp, archs, "flops")
