"""PA&DA and ShiftNAS samplers inside the real trainer: plans, epoch data, logit updates, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.checkpoints import load_checkpoint
from nas.data import create_data
from nas.train import SAMPLERS, TrainConfig, Trainer, create_sampler
from nas.train.samplers.pada import PADASampler
from nas.train.samplers.shiftnas import ShiftNASSampler
from search_spaces import create_space
from supernets import create_supernet

SPACE = dict(C=4, N=1)


def _data():
    return create_data("fashion_mnist", train_limit=256, val_size=300, crop_pad=0, flip=False)


def _cfg(**kw):
    base = dict(epochs=3, batch_size=32, lr=0.05, threads=1, eval_every=0, progress=False, tensorboard=False,
                grad_clip=5.0, eval_images=64, calib_images=64, calib_batch=32, seed=3)
    return TrainConfig(**(base | kw))


def _heldout(data):
    return [(b.x, b.y) for b in data.batches("val", np.arange(64), 64)]


def _make(name, space, data):
    if name == "pada":
        return create_sampler("pada", space, epochs=3, unbiased=True, seed=1)
    s = create_sampler("shiftnas", space, n_bins=3, every_steps=4, warmup_steps=2, probes_per_bin=1, n_probe=64,
                       lr=1.0, seed=1)
    s.bind_heldout(_heldout(data))
    return s


def test_registered():
    assert {"pada", "shiftnas"} <= set(SAMPLERS.names())


def test_pada_in_trainer_importance_samples_paths_and_data(tmp_path):
    space, data = create_space("nb201_tiny", **SPACE), _data()
    sampler = _make("pada", space, data)
    seen, probs_then = [], []
    orig = sampler.epoch_data

    def spy(epoch, n, seed):
        ed = orig(epoch, n, seed)
        seen.append(ed)
        probs_then.append(sampler.data.probs.copy())
        return ed

    sampler.epoch_data = spy
    torch.manual_seed(0)
    Trainer(create_supernet("nb201", space), data, sampler, _cfg(), tmp_path).fit()
    assert len(seen) == 3 and seen[0].weights is None
    assert sorted(seen[0].indices.tolist()) == list(range(256))  # epoch 0: a plain permutation
    for ed, p in zip(seen[1:], probs_then[1:]):  # later epochs: drawn with replacement, 1/(N p_i) weights
        assert len(np.unique(ed.indices)) < 256 and ed.weights is not None
        np.testing.assert_allclose(ed.weights, 1.0 / (256 * p[ed.indices]), rtol=1e-6)
    probs = sampler.path.probs[0]
    assert abs(probs.sum() - 1) < 1e-9 and probs.min() >= 0.02 - 1e-12 and not np.allclose(probs, 0.2)
    conv = [space.genes()[0].choices.index(op) for op in ("nor_conv_1x1", "nor_conv_3x3")]
    assert probs[conv].min() > probs[0]  # parametric ops outrank "none" (zero gradient), which keeps the floor


def test_shiftnas_in_trainer_updates_logits_stepwise_and_from_val_split(tmp_path):
    space, data = create_space("nb201_tiny", **SPACE), _data()
    sampler = _make("shiftnas", space, data)
    Trainer(create_supernet("nb201", space), data, sampler, _cfg(epochs=2), tmp_path / "a").fit()
    assert sampler.steps_done == 16 and len(sampler.history) == 4  # steps 2, 6, 10, 14
    assert sampler.shift.n_updates == 3 and not np.allclose(sampler.probs(), 1 / 3)
    by_context = create_sampler("shiftnas", space, n_bins=3, every_epochs=1, probes_per_bin=1, n_probe=64, seed=1)
    Trainer(create_supernet("nb201", space), data, by_context, _cfg(epochs=2), tmp_path / "b").fit()
    assert len(by_context.history) == 2 and by_context.shift.n_updates == 1
    assert not np.allclose(by_context.probs(), 1 / 3)


class _Crash(RuntimeError):
    pass


@pytest.mark.parametrize("name", ["pada", "shiftnas"])
def test_sampler_state_resumes_exactly_from_a_mid_epoch_checkpoint(tmp_path, name):
    space, data = create_space("nb201_tiny", **SPACE), _data()
    cfg = _cfg(checkpoint_every=3)
    torch.manual_seed(0)
    clean_sampler = _make(name, space, data)
    Trainer(create_supernet("nb201", space), data, clean_sampler, cfg, tmp_path / "clean").fit()

    crashing = _make(name, space, data)
    plan = crashing.plan

    def crash_at_13(step, batch):
        if step == 13:
            raise _Crash("simulated failure")
        return plan(step, batch)

    crashing.plan = crash_at_13
    torch.manual_seed(0)
    with pytest.raises(_Crash):
        Trainer(create_supernet("nb201", space), data, crashing, cfg, tmp_path / "run").fit()
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 12  # mid epoch 1
    resumed = _make(name, space, data)
    result = Trainer(create_supernet("nb201", space), data, resumed, cfg, tmp_path / "run").fit(resume=True)
    assert result.resumed_from_step == 12 and result.steps == 24
    a = load_checkpoint(tmp_path / "clean" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["sampler"] == b["sampler"]
    assert isinstance(resumed, PADASampler if name == "pada" else ShiftNASSampler)
