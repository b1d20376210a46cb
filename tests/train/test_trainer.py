"""The trainer on real Fashion-MNIST: learning, gradients, exact resume after SIGKILL, checkpoints, phases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.checkpoints import CheckpointError, atomic_write, load_checkpoint, load_supernet, load_weights
from nas.data import create_data
from nas.train import TrainConfig, Trainer
from nas.train.run import run_train
from nas.train.samplers import SandwichSampler, UniformSampler
from search_spaces.errors import BadInputError
from supernets import create_supernet

from .conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]


def _data():
    return create_data("fashion_mnist", train_limit=320, val_size=500)


def _cfg(**kw):
    base = dict(epochs=1, batch_size=32, lr=0.05, threads=1, eval_every=0, progress=False, tensorboard=False,
                log_every=1)
    return TrainConfig(**(base | kw))


def test_loss_decreases_on_real_data(tmp_path):
    torch.manual_seed(0)
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny")
    sampler = UniformSampler(net.space, choices={"ks": "max", "e": "max", "d": "max", "r": "max"}, n_subnets=1)
    data = create_data("fashion_mnist", train_limit=256, val_size=500)
    Trainer(net, data, sampler, _cfg(epochs=3, lr=0.1, batch_size=32), tmp_path).fit()
    losses = np.loadtxt(tmp_path / "metrics.csv", delimiter=",", skiprows=1, usecols=3)
    assert len(losses) == 24
    assert losses[-6:].mean() < 0.9 * losses[:4].mean()


class _GradProbe(SandwichSampler):
    """Records the step's archs and, before the optimizer step, which parameters hold a non-zero gradient."""

    def plan(self, step, batch):
        plan = super().plan(step, batch)
        self.archs = plan.archs
        return plan

    def on_step_end(self, step, model):
        self.grads = {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters()}


def _used(name, archs, per_stage):
    """Whether parameter ``name`` takes part in some arch: transform matrix 'AtoB' only when a kernel <= B runs."""
    if ".matrices." not in name:
        return True
    block, small = int(name.split(".")[1]), int(name.rsplit("to", 1)[1])
    s, b = divmod(block, per_stage)
    return any(b < a.d[s] and a.ks[block] <= small for a in archs)


def test_every_active_parameter_gets_a_gradient_from_a_sandwich_step(tmp_path):
    torch.manual_seed(0)
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny")
    probe = _GradProbe(net.space, n_random=2, zero_init_residual=False)
    Trainer(net, _data(), probe, _cfg(max_steps_per_epoch=1), tmp_path).fit()
    per_stage = net.space.max_depth
    wrong = [n for n, ok in probe.grads.items() if ok != _used(n, probe.archs, per_stage)]
    assert not wrong, f"parameters whose gradient presence is wrong: {wrong}"
    assert sum(probe.grads.values()) > 0.95 * len(probe.grads)


class _MinProbe(UniformSampler):
    def on_step_end(self, step, model):
        self.grads = {n: p.grad is not None for n, p in model.named_parameters()}


def test_only_active_parameters_get_gradients(tmp_path):
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny")
    probe = _MinProbe(net.space, choices={g: "min" for g in ("ks", "e", "d", "r")})
    Trainer(net, _data(), probe, _cfg(max_steps_per_epoch=1), tmp_path).fit()
    per_stage = net.space.max_depth
    for name, has in probe.grads.items():
        if name.startswith("blocks."):
            block = int(name.split(".")[1])
            assert has == (block % per_stage == 0), name  # min depth 1: only the first block of each stage


def test_sandwich_zero_inits_residual_gammas(tmp_path):
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny")
    SandwichSampler(net.space).setup(net)
    for i, blk in enumerate(net.blocks):
        assert (blk.project_bn.bn.weight == 0).all() == blk.skip, i


def test_resume_after_sigkill_gives_identical_weights(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    overrides = ["sampler=sandwich", "sampler.kwargs.n_random=1", "trainer.checkpoint_every=1",
                 "trainer.batch_size=16", "data.kwargs.train_limit=160", "trainer.epochs=2"]
    cmd = [sys.executable, "-m", "nas.train", *_cli_overrides(killed, overrides)]
    log = tmp_path / "killed.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    metrics = killed / "metrics.csv"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) > 4:  # header + 3 steps logged
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}: {log.read_text()[-2000:]}"
    state = load_checkpoint(killed / "checkpoint.pt")  # never corrupt, whenever the kill landed
    assert not state["finished"] and 0 < state["step"] < 20
    resumed = run_train(tiny_config(killed, *overrides, "resume=true"))
    assert resumed.resumed_from_step == state["step"] and resumed.steps == 20
    run_train(tiny_config(clean, *overrides))
    a, b = load_supernet(killed), load_supernet(clean)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    rows = (killed / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in rows[1:]] == [str(s) for s in range(1, 21)]  # no duplicated steps
    clean_rows = (clean / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[:4] for r in rows] == [r.split(",")[:4] for r in clean_rows]  # same lrs and losses


def _cli_overrides(out_dir, extra):
    from .conftest import TINY

    return [*TINY, f"out_dir={out_dir}", *extra, f"hydra.run.dir={out_dir}/hydra"]


def test_checkpoint_of_a_different_space_is_rejected(tmp_path):
    run_train(tiny_config(tmp_path / "run", "trainer.max_steps_per_epoch=1", "trainer.epochs=1"))
    other = create_supernet("ofa_mbv3", "ofa_mbv3_fmnist")
    sampler = UniformSampler(other.space)
    trainer = Trainer(other, _data(), sampler, _cfg(), tmp_path / "run")
    with pytest.raises(CheckpointError, match="ofa_mbv3_tiny"):
        trainer.fit(resume=True)
    with pytest.raises(CheckpointError, match="different supernet"):
        load_weights(other, tmp_path / "run")
    with pytest.raises(BadInputError, match="resume=true"):  # bad input (exit 2), not a corrupt file
        run_train(tiny_config(tmp_path / "run"))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "ckpt.pt"
    atomic_write(target, lambda p: p.write_bytes(b"old"))

    def failing(p):
        p.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_progressive_phases_chain_sort_and_never_rerun(tmp_path):
    phases = ("sampler.kwargs.phases=[{name: full, choices: {ks: max, e: max, d: max}}, "
              "{name: kernel, choices: {ks: all, e: max, d: max}}, "
              "{name: expand_1, choices: {ks: all, e: top2, d: max}, n_subnets: 2}]")
    over = ["sampler=progressive", phases, "trainer.epochs=1", "trainer.max_steps_per_epoch=2"]
    res = run_train(tiny_config(tmp_path, *over))
    assert list(res.phases) == ["full", "kernel", "expand_1"]
    assert all((tmp_path / d / "done.json").exists() for d in ("0_full", "1_kernel", "2_expand_1"))
    # expand_1 started from kernel's weights after re-sorting channels: same function, permuted weights
    kernel, expand = load_supernet(tmp_path / "1_kernel"), load_supernet(tmp_path / "2_expand_1")
    assert not torch.equal(kernel.blocks[0].expand_conv.conv.weight, expand.blocks[0].expand_conv.conv.weight)
    stamp = (tmp_path / "1_kernel" / "supernet.safetensors").stat().st_mtime_ns
    again = run_train(tiny_config(tmp_path, *over, "resume=true"))
    assert all(r is None for r in again.phases.values())
    assert (tmp_path / "1_kernel" / "supernet.safetensors").stat().st_mtime_ns == stamp
