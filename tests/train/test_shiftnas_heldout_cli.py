"""ShiftNAS's step-wise updates from held-out batches bound by config alone (``sampler.kwargs.heldout``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from nas.checkpoints import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = ["search_space=ofa_mbv3_tiny", "data.kwargs.train_limit=128", "data.kwargs.val_size=500",
        "trainer.batch_size=32", "trainer.epochs=1", "trainer.eval_every=0", "trainer.progress=false",
        "trainer.tensorboard=false", "trainer.checkpoint_every=0", "sampler=shiftnas",
        "sampler.kwargs.every_epochs=null", "sampler.kwargs.n_bins=4", "sampler.kwargs.probes_per_bin=1"]


def train(tmp_path: Path, *args: str, base: list[str] = TINY) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run([sys.executable, "-m", "nas.train", *base, "out_dir=run", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_heldout_from_config_drives_step_wise_updates(tmp_path):
    proc = train(tmp_path, "sampler.kwargs.every_steps=2",
                 "sampler.kwargs.heldout={split: val, n_images: 64, batch_size: 32}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["sampler"]["history"]
    assert len(history) == 2  # 4 steps, an update every 2
    assert not np.allclose(history[-1], 0.25)  # the bin distribution moved away from uniform


def test_heldout_on_a_sampler_without_it_is_refused(tmp_path):
    proc = train(tmp_path, "sampler=uniform", "+sampler.kwargs.heldout={split: val}",
                 base=[a for a in TINY if not a.startswith("sampler")])
    assert proc.returncode == 2 and "takes no held-out batches" in proc.stderr
