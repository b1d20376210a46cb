"""ShiftNAS architecture generator: bins kept by the resource-constraint loss, the task signal, exact resume,
step-wise updates from config and search-free deployment from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.checkpoints import load_checkpoint
from nas.generate import generate_arch
from nas.train.samplers.shiftnas import ComplexityBins
from nas.train.samplers.shiftnas_generator import GeneratorTrainer
from search_spaces import create_space
from search_spaces.errors import BadInputError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def space():
    return create_space("ofa_mbv3_tiny")


def _in_bin(g, bins, space, n=10):
    return np.mean([bins.bin_of(space.macs(g.sample(k))) == k for k in range(bins.n_bins) for _ in range(n)])


def test_resource_constraint_loss_keeps_generated_nets_in_their_bin(space):
    bins = ComplexityBins(space, n_bins=4, n_probe=256)
    g = GeneratorTrainer(space, bins.edges, space.macs, lr=5e-3, n_fit=256, seed=0)
    before = _in_bin(g, bins, space)
    rng = np.random.default_rng(0)
    for _ in range(400):
        g.sample(int(rng.integers(4)))
        g.learn(None)
    after = _in_bin(g, bins, space)
    assert after >= 0.6 and after >= before + 0.25, (before, after)
    assert sum(bins.bin_of(space.macs(g.deploy(k))) == k for k in range(4)) >= 3


def test_task_signal_moves_the_generator_toward_low_loss_choices(space):
    edges = ComplexityBins(space, n_bins=2, n_probe=64).edges
    g = GeneratorTrainer(space, edges, space.macs, lr=2e-2, lam=0.0, n_fit=64, seed=1)
    gene = 0  # loss 0 when the first gene takes its last choice, else 1

    def p_last():
        with torch.no_grad():
            return float(np.mean([g.net(0, generator=torch.Generator().manual_seed(i))[0][gene] ==
                                  len(space.genes()[gene].choices) - 1 for i in range(40)]))

    before = p_last()
    for _ in range(150):
        arch = g.sample(0)
        g.learn(0.0 if space.encode(arch)[gene] == len(space.genes()[gene].choices) - 1 else 1.0)
    assert p_last() > before + 0.3


def test_generator_state_round_trip_resumes_draws_exactly(space):
    edges = ComplexityBins(space, n_bins=3, n_probe=64).edges
    a = GeneratorTrainer(space, edges, space.macs, n_fit=64, seed=2)
    for k in range(3):
        a.sample(k)
        a.learn(1.0)
    b = GeneratorTrainer(space, edges, space.macs, n_fit=64, seed=9)
    b.load_state_dict(a.state_dict())
    for k in (0, 2, 1, 1):
        assert a.sample(k) == b.sample(k)
        assert a.learn(0.5) == b.learn(0.5)


def test_train_with_generator_and_stepwise_updates_from_config_then_generate_from_cli(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nas.train", "sampler=shiftnas", "search_space=ofa_mbv3_tiny",
           "sampler.kwargs.generator=true", "sampler.kwargs.every_steps=2", "sampler.kwargs.n_bins=3",
           "sampler.kwargs.heldout_images=64", "sampler.kwargs.probes_per_bin=1", "trainer.epochs=1",
           "trainer.max_steps_per_epoch=4", f"out_dir={out}", "data.kwargs.train_limit=320",
           "data.kwargs.val_size=200", "trainer.batch_size=32", "trainer.threads=1", "trainer.progress=false",
           "trainer.tensorboard=false", "trainer.eval_every=0", "hydra.run.dir=" + str(tmp_path / "hydra")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sampler = load_checkpoint(out / "checkpoint.pt")["sampler"]
    hist = sampler["history"]  # held-out losses after step 2 (snapshot) and step 4 (first logit update)
    assert len(hist) == 2 and sampler["shift"]["n_updates"] == 1 and hist[1] != hist[0]
    assert sampler["generator"] is not None
    edges = sampler["edges"]
    target = 0.5 * (edges[2] + edges[3])
    proc = subprocess.run([sys.executable, "-m", "nas.generate", f"run={out}", f"macs={target}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["bin"] == 2 and res["bin_range"] == [edges[2], edges[3]]
    space = create_space("ofa_mbv3_tiny")
    assert res["macs"] == space.macs(space.from_dict(res["arch"]))
    assert res == generate_arch(out, macs=target)
    bad = subprocess.run([sys.executable, "-m", "nas.generate", f"run={out}", "macs=1"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "outside the generator's range" in bad.stderr
    with pytest.raises(BadInputError, match="no checkpoint"):
        generate_arch(tmp_path, macs=target)
