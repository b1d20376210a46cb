"""init_from=: a trained float supernet initialises a quantised supernet over the same base space (its float path
computes exactly what the float supernet computes); mismatched or missing sources are refused clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas import embedded
from nas.checkpoints import load_checkpoint, load_supernet
from nas.train.init_from import init_from
from search_spaces import create_space
from search_spaces.errors import BadInputError
from supernets import create_supernet
from supernets.quant import full_precision, quant_layers

REPO = Path(__file__).resolve().parents[2]
FP = embedded.path(embedded.DEFAULT)


def _quant(space_name="quant_ofa_mbv3_fmnist"):
    torch.manual_seed(1)
    kwargs = {"kernel_transform": True, "dropout": 0.1} if "ofa" in space_name else {}
    return create_supernet("quant", create_space(space_name), base_kwargs=kwargs).eval()


def test_quant_float_path_equals_the_float_supernet():
    fp, q = load_supernet(FP).eval(), init_from(_quant(), FP)
    assert not any(bool(layer.wq.initialized) for layer in quant_layers(q))  # quantisers calibrate later
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    for arch in (fp.space.max_arch(), fp.space.min_arch(), fp.space.sample(3)):
        joint = q.space.policy_for(arch, 8, 8)
        with torch.no_grad(), q.use(joint), full_precision(q), fp.use(arch):
            size = arch.r
            xr = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            torch.testing.assert_close(q(xr), fp(xr))


def test_mismatched_and_missing_sources_are_refused(tmp_path):
    with pytest.raises(BadInputError, match="specs must match"):
        init_from(_quant("quant_nb201_tiny"), FP)
    with pytest.raises(BadInputError, match="does not exist"):
        init_from(_quant(), tmp_path / "nope")
    nb = create_supernet("nb201", create_space("nb201_tiny"))
    with pytest.raises(BadInputError, match="not this run's"):
        init_from(nb, FP)


def test_cli_trains_eqnet_from_the_float_default(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nas.train", "search_space=quant_ofa_mbv3_fmnist", "supernet=quant",
           "+supernet.kwargs.base_kwargs={kernel_transform: true, dropout: 0.1}", "sampler=eqnet",
           f"init_from={FP}", "sampler.kwargs.calib_steps=5", "trainer.epochs=1", "trainer.max_steps_per_epoch=2",
           "trainer.batch_size=32", "trainer.lr=0.01", "trainer.eval_every=0", "trainer.progress=false",
           "trainer.tensorboard=false", "data.kwargs.train_limit=320", "data.kwargs.val_size=200",
           f"out_dir={out}", "hydra.run.dir=" + str(tmp_path / "hydra")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = load_checkpoint(out / "checkpoint.pt")
    fp = load_supernet(FP).state_dict()
    moved = [k for k, v in fp.items() if v.is_floating_point() and v.dim() > 1]
    # two small steps from the float weights: close to them, far closer than a fresh initialisation
    q = {k.replace("inner.", "", 1).replace(".op.", "."): v for k, v in state["model"].items()}
    rel = max(float((q[k] - fp[k]).norm() / fp[k].norm()) for k in moved)
    assert rel < 0.2
    bad_cmd = [("init_from=/nonexistent" if c.startswith("init_from=") else c) for c in cmd[:-2]]
    bad = subprocess.run([*bad_cmd, f"out_dir={tmp_path / 'b'}"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "init_from='/nonexistent' does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr
