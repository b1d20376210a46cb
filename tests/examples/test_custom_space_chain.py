"""A user's space and supernet (examples/custom_space, copied outside the engine) through every command by config:
train -> evaluate -> measured search -> export -> profile, a few steps each, with the commands the example shows."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "custom_space" / "my_space.py"
SPACE = ["search_space=custom", "search_space.name=my_space:make_space"]
QUICK_TRAIN = ["data.kwargs.train_limit=2048", "data.kwargs.val_size=500", "trainer.batch_size=64", "trainer.epochs=2",
               "trainer.progress=false", "trainer.tensorboard=false", "trainer.eval_every=0"]


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(cwd), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def example_command(prefix: str) -> list[str]:
    """The arguments of the example docstring's command starting with ``python -m <prefix>`` ($SPACE expanded)."""
    doc = EXAMPLE.read_text().split('"""')[1]
    line = next(x.strip() for x in doc.splitlines() if x.strip().startswith(f"python -m {prefix} "))
    args = shlex.split(line.split("  #")[0])[3:]
    return [a for arg in args for a in (SPACE if arg == "$SPACE" else [arg])]


@pytest.fixture()
def user_dir(tmp_path) -> Path:
    shutil.copy(EXAMPLE, tmp_path / "my_space.py")
    return tmp_path


@pytest.mark.slow  # five commands, about a minute on 2 cores
def test_custom_space_goes_through_every_command(user_dir):
    train = example_command("nas.train")
    proc = run("nas.train", *train, *QUICK_TRAIN, cwd=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "my_space:make_space" in (user_dir / "run" / "config.yaml").read_text()

    proc = run("nas.evaluate", *example_command("nas.evaluate"), "n_random=6", "calib_images=200", "n_images=500",
               "progress=false", cwd=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = float(re.search(r"best top1 ([0-9.]+)%", proc.stdout).group(1))
    assert best > 20.0, proc.stdout  # trained: well above the 10% of chance on 10 classes

    proc = run("nas.search", *example_command("nas.search"), "accuracy.n_images=300", "accuracy.calib_images=200",
               "searcher.kwargs.rounds=2", "searcher.kwargs.batch_size=4", "budget=100", "progress=false", cwd=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    latest = user_dir / "results" / "search" / "latest"
    front = json.loads((latest / "front_ranked.json").read_text())
    assert front and all(p["arch"]["space"] == "chain" for p in front)

    proc = run("nas.export", *example_command("nas.export"), "+data.kwargs.test_limit=500", cwd=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((latest / "subnet_rank0" / "metadata.json").read_text())
    assert meta["arch"] == front[0]["arch"] and meta["bn_recalibration"]["recalibrated"] is True
    assert meta["measured_test_top1"] > 20.0 and (latest / "subnet_rank0" / "model.onnx").is_file()

    proc = run("nas.profile", *example_command("nas.profile"), "+hw.build.normalise=false", "hw.build.warmup=0",
               "hw.build.repeats=2", "hw.build.passes=1", cwd=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = json.loads((user_dir / "chain_cpu.json").read_text())["entries"]
    assert set(entries) == _every_layer_key(user_dir)  # the table prices every layer any chain arch has


def _every_layer_key(user_dir: Path) -> set[str]:
    sys.path.insert(0, str(user_dir))
    try:
        import my_space
    finally:
        sys.path.remove(str(user_dir))
    space = my_space.make_space()
    archs = [my_space.ChainArch(w, k) for w in itertools.product(my_space.WIDTHS, repeat=my_space.LAYERS)
             for k in itertools.product(my_space.KERNELS, repeat=my_space.LAYERS)]
    return {spec.key() for a in archs for spec in space.layers(a)}


@pytest.mark.parametrize("override, message", [
    ("search_space.name=no_such_module:make_space", "cannot import module 'no_such_module'"),
    ("search_space.name=my_space:make_spaces", "has no attribute 'make_spaces'"),
    ("supernet.name=my_space:make_space", "cannot be called with ['space']"),
    ("search_space.name=my_space:not_a_space", "returned a int, not a SearchSpace"),
])
def test_bad_factory_specs_are_refused_cleanly(user_dir, override, message):
    with open(user_dir / "my_space.py", "a") as fh:
        fh.write("\n\ndef not_a_space() -> int:\n    return 42\n")
    args = [a for a in example_command("nas.train") if not a.startswith(override.split("=")[0] + "=")]
    proc = run("nas.train", *args, override, *QUICK_TRAIN, cwd=user_dir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (user_dir / "run").exists()
