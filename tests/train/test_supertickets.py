"""SuperTickets: global magnitude masks, slimming penalty, progressive pruning with BN recalibration,
reactivation, exact resume and the exported ticket's stored and measured sparsity."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from nas.checkpoints import load_checkpoint, load_supernet
from nas.export_ticket import export_ticket, magnitude_prune
from nas.train import Trainer
from nas.train.samplers.supertickets import SuperTicketsSampler, global_magnitude_masks, mask_sparsity
from search_spaces.errors import BadInputError
from supernets import create_supernet
from tests.train.conftest import small_config, small_data

KW = dict(target_sparsity=0.4, prune_start=0.2, prune_every=0.2, prune_step=0.2, reactivate=0.25, n_random=1,
          recal_images=64, recal_batch=32, slim_warmup=0.5, slim_rho=1e-3)


def _data():
    return small_data()


def _cfg(**kw):
    return small_config(**kw)


def _net():
    torch.manual_seed(0)
    return create_supernet("ofa_mbv3", "ofa_mbv3_tiny")


def test_global_magnitude_masks_prune_the_smallest_and_keep_forced_entries():
    w = {"a": torch.tensor([[0.1, -5.0], [0.3, 2.0]]), "b": torch.tensor([[-0.2, 0.05, 4.0]])}
    m = global_magnitude_masks(w, 0.4)  # 7 weights, 3 pruned: 0.05, 0.1, -0.2
    assert m["a"].tolist() == [[False, True], [True, True]] and m["b"].tolist() == [[False, False, True]]
    assert mask_sparsity(m) == pytest.approx(3 / 7)
    forced = {"a": torch.zeros(2, 2, dtype=torch.bool), "b": torch.tensor([[False, True, False]])}
    m = global_magnitude_masks(w, 0.4, forced)
    assert m["b"][0, 1] and not m["a"][1, 0] and mask_sparsity(m) == pytest.approx(3 / 7)


def test_slimming_adds_ramped_l1_subgradient_to_expansion_bn_gammas_only():
    net = _net()
    s = SuperTicketsSampler(net.space, **KW)
    s.bind(net, steps_per_epoch=5, epochs=2)
    assert s.rho(0) == 0 and s.rho(2) == pytest.approx(0.4e-3) and s.rho(5) == s.rho(9) == 1e-3
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    s.on_step_end(2, net)
    for n, p in net.named_parameters():
        slim = n.endswith(("expand_bn.bn.weight", "dw_bn.bn.weight"))
        want = torch.sign(p.detach()) * 0.4e-3 if slim else torch.zeros_like(p)
        torch.testing.assert_close(p.grad, want, msg=n)


def test_pruning_is_progressive_global_and_recalibrates_bn():
    net, data = _net(), _data()
    s = SuperTicketsSampler(net.space, **(KW | {"reactivate": 0.0}))
    s.bind(net, steps_per_epoch=5, epochs=2, data=data)
    assert [s.event_step(i) for i in range(s.n_events)] == [2, 4]
    bn = net.blocks[0].expand_bn.bn
    s.plan(0, None)
    s.plan(1, None)
    assert not s.masks
    bn.running_mean.fill_(123.0)
    s.plan(2, None)
    assert mask_sparsity(s.masks) == pytest.approx(0.2, abs=1e-4)
    assert bn.running_mean.abs().max() < 100  # recalibrated from training images after the prune
    for n, p in net.named_parameters():
        if n in s.masks:
            assert bool((p[~s.masks[n]] == 0).all()), n
    first = {n: m.clone() for n, m in s.masks.items()}
    s.plan(3, None)
    s.plan(4, None)
    assert mask_sparsity(s.masks) == pytest.approx(0.4, abs=1e-4)
    assert all(not bool((m & ~first[n]).any()) for n, m in s.masks.items())  # no reactivation: pruned stay pruned
    assert "head.classifier.weight" not in s.masks and not any("matrices" in n for n in s.masks)


def test_reactivation_brings_back_the_pruned_weights_with_the_largest_gradients():
    net = _net()
    s = SuperTicketsSampler(net.space, **(KW | {"recal_images": 0}))
    s.bind(net, steps_per_epoch=5, epochs=2)
    s.plan(2, None)
    name = "blocks.1.expand_conv.conv.weight"
    pruned = (~s.masks[name]).nonzero()[:3]
    s.grad_score = {n: torch.zeros(m.shape) for n, m in s.masks.items()}
    for i in pruned:
        s.grad_score[name][tuple(i)] = 1.0
    s.plan(4, None)
    assert all(bool(s.masks[name][tuple(i)]) for i in pruned)
    assert mask_sparsity(s.masks) == pytest.approx(0.4, abs=1e-4)
    assert s.history[-1]["reactivated"] == round(0.25 * 0.2 * sum(m.numel() for m in s.masks.values()))


class _Probe(SuperTicketsSampler):
    def on_step_end(self, step, model):
        super().on_step_end(step, model)
        if self.masks:
            w = self._weights(model)
            self.leaks = max(self.__dict__.get("leaks", 0.0),
                             max(float(w[n].grad[~m].abs().max()) for n, m in self.masks.items()
                                 if w[n].grad is not None and (~m).any()))


def test_training_keeps_pruned_weights_zero_and_exports_a_ticket_with_measured_sparsity(tmp_path):
    net = _net()
    s = _Probe(net.space, **KW)
    Trainer(net, _data(), s, _cfg(), tmp_path / "run").fit()
    assert s.leaks == 0.0  # pruned weights get no gradient
    assert [h["sparsity"] for h in s.history] == pytest.approx([0.2, 0.4], abs=1e-4)
    saved = load_supernet(tmp_path / "run")
    masks = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["sampler"]["masks"]
    params = dict(saved.named_parameters())
    zeros = sum(int((params[n].detach() == 0).sum()) for n in masks) / sum(m.numel() for m in masks.values())
    assert zeros == pytest.approx(0.4, abs=1e-3)
    meta = export_ticket(tmp_path / "run", saved.space.max_arch(), tmp_path / "ticket", onnx=False, recalibrate=False)
    ticket = json.loads((tmp_path / "ticket" / "metadata.json").read_text())["ticket"]
    assert ticket == meta["ticket"] and ticket["target_sparsity"] == 0.4
    assert ticket["measured_sparsity"] == pytest.approx(ticket["supernet_sparsity"], abs=1e-6)  # max arch: all
    state = load_file(str(tmp_path / "ticket" / "model.safetensors"))
    convs = [t for n, t in state.items() if t.dim() == 4 and not n.startswith(("stem", "head", "first"))]
    assert sum(int((t == 0).sum()) for t in convs) / sum(t.numel() for t in convs) > 0.35
    small = export_ticket(tmp_path / "run", saved.space.min_arch(), tmp_path / "small", onnx=False,
                          recalibrate=False)["ticket"]
    assert 0.0 < small["measured_sparsity"] < 1.0 and small["measured_tensors"] > 0
    Trainer(_net(), _data(), SuperTicketsSampler(net.space, target_sparsity=0.0, n_random=0),
            _cfg(epochs=1, max_steps_per_epoch=1), tmp_path / "dense").fit()
    with pytest.raises(BadInputError, match="no pruning masks"):
        export_ticket(tmp_path / "dense", saved.space.max_arch(), tmp_path / "x", onnx=False, recalibrate=False)


def test_magnitude_prune_baseline_hits_the_sparsity():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 1))
    before = torch.cat([p.detach().abs().flatten() for n, p in m.named_parameters() if n.endswith("weight")])
    assert magnitude_prune(m, 0.5, exclude=()) == pytest.approx(0.5, abs=1e-2)
    after = torch.cat([p.detach().flatten() for n, p in m.named_parameters() if n.endswith("weight")])
    kept = before[after != 0]
    assert float((after == 0).float().mean()) == pytest.approx(0.5, abs=1e-2)
    assert float(kept.min()) >= float(before[after == 0].max())  # the smallest magnitudes went


class _Crash(SuperTicketsSampler):
    def plan(self, step, batch):
        if step == 7:
            raise KeyboardInterrupt
        return super().plan(step, batch)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    net = _net()
    with pytest.raises(KeyboardInterrupt):
        Trainer(net, _data(), _Crash(net.space, **KW), _cfg(), tmp_path / "a").fit()
    assert load_checkpoint(tmp_path / "a" / "checkpoint.pt")["sampler"]["events_done"] == 2
    net = _net()
    res = Trainer(net, _data(), SuperTicketsSampler(net.space, **KW), _cfg(), tmp_path / "a").fit(resume=True)
    assert res.resumed_from_step == 7
    net = _net()
    Trainer(net, _data(), SuperTicketsSampler(net.space, **KW), _cfg(), tmp_path / "b").fit()
    a, b = load_supernet(tmp_path / "a"), load_supernet(tmp_path / "b")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    ma = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["sampler"]["masks"]
    mb = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["sampler"]["masks"]
    assert all(torch.equal(ma[n], mb[n]) for n in mb)


def test_cli_trains_supertickets_and_the_ticket_exports_with_its_sparsity(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nas.train", "sampler=supertickets", "search_space=ofa_mbv3_tiny",
           "sampler.kwargs.target_sparsity=0.3", "sampler.kwargs.prune_start=0.2", "sampler.kwargs.prune_every=0.2",
           "sampler.kwargs.n_random=0", "sampler.kwargs.recal_images=64", "trainer.epochs=1",
           "trainer.max_steps_per_epoch=4", f"out_dir={out}", "data.kwargs.train_limit=320",
           "data.kwargs.val_size=200", "trainer.batch_size=32", "trainer.threads=1", "trainer.progress=false",
           "trainer.tensorboard=false", "trainer.eval_every=0", "hydra.run.dir=" + str(tmp_path / "hydra")]
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sampler = load_checkpoint(out / "checkpoint.pt")["sampler"]
    assert [h["step"] for h in sampler["history"]] == [1, 2, 3]  # ceil(0.2*4), ceil(0.4*4), ceil(0.6*4)
    assert mask_sparsity(sampler["masks"]) == pytest.approx(0.3, abs=1e-4)
    import json

    net = load_supernet(out)
    arch = net.space.to_json(net.space.max_arch())
    proc = subprocess.run([sys.executable, "-m", "nas.export", f"checkpoint={out}", f"arch={arch}", "ticket=true",
                           "data=fashion_mnist", "data.kwargs.test_limit=200", f"out={tmp_path / 'ticket'}"],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "exported ticket" in proc.stdout and "measured sparsity 0.300" in proc.stdout
    ticket = json.loads((tmp_path / "ticket" / "metadata.json").read_text())["ticket"]
    assert ticket["measured_sparsity"] == pytest.approx(0.3, abs=1e-4)
