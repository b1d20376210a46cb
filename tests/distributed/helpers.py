"""Helpers of the distributed tests: tiny training configs, torchrun launches (with a kill switch), weights."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from nas.conf import CONF_DIR
from nas.data import DataModule
from nas.train import run

REPO = Path(__file__).resolve().parents[2]
CONF = str(CONF_DIR)
TORCHRUN = Path(sys.executable).with_name("torchrun")
F64_SHIM = Path(__file__).with_name("train_f64.py")

#: tiny, deterministic training (no augmentation, no dropout, lr low enough that float32 rounding differences
#: between 1 and 2 processes are not amplified into visibly different runs)
TINY = [
    "search_space=ofa_mbv3_tiny", "data.kwargs.train_limit=256", "data.kwargs.val_size=500",
    "data.kwargs.crop_pad=0", "data.kwargs.flip=false", "trainer.batch_size=32", "trainer.threads=1",
    "trainer.lr=0.01", "trainer.dropout=0.0", "trainer.eval_every=0", "trainer.progress=false",
    "trainer.tensorboard=false", "trainer.log_every=1",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_config(out_dir: Path, overrides: Sequence[str]):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="train", overrides=[*TINY, f"out_dir={out_dir}", *overrides])


@contextmanager
def float64_training() -> Iterator[None]:
    """Train in float64 (model and images): exact comparisons of 1- and 2-process runs.

    In float32 a single activation whose value rounds to the other side of a ReLU/hard-swish kink in one run but not
    the other changes a gradient by ~1% (measured: the float32 gradient of some OFA-tiny subnets differs from the
    float64 one by 7e-4 in a single process), so float32 runs with different batch splits are equal only up to
    such events. Float64 makes them vanishingly rare.
    """
    dtype, build = torch.get_default_dtype(), run.build_data
    torch.set_default_dtype(torch.float64)
    run.build_data = lambda cfg: _Float64Data(build(cfg))  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        run.build_data = build  # type: ignore[assignment]


class _Float64Data:
    """A data module whose images are float64."""

    def __init__(self, inner: DataModule) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def get(self, split: str, indices):
        x, y = self._inner.get(split, indices)
        return x.double(), y

    def batches(self, *args, **kwargs):
        return DataModule.batches(self, *args, **kwargs)  # type: ignore[arg-type]

    def calibration_batches(self, *args, **kwargs):
        return DataModule.calibration_batches(self, *args, **kwargs)  # type: ignore[arg-type]


def torchrun_cmd(nproc: int, out_dir: Path, overrides: Sequence[str], *, f64: bool) -> list[str]:
    """``torchrun -m nas.train`` (or its float64 shim, which runs the same hydra entry point)."""
    entry = [str(F64_SHIM)] if f64 else ["-m", "nas.train"]
    return [str(TORCHRUN), f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
            *entry, *TINY, f"out_dir={out_dir}", f"hydra.run.dir={out_dir}/hydra", *overrides]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}


def torchrun(nproc: int, out_dir: Path, overrides: Sequence[str], *, f64: bool = False, timeout: float = 300) -> None:
    proc = subprocess.run(torchrun_cmd(nproc, out_dir, overrides, f64=f64), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def torchrun_killed(nproc: int, out_dir: Path, overrides: Sequence[str], when: Callable[[], bool], *,
                    f64: bool = False, timeout: float = 300) -> None:
    """Start a torchrun job and SIGKILL its whole process group as soon as ``when()`` holds."""
    proc = subprocess.Popen(torchrun_cmd(nproc, out_dir, overrides, f64=f64), cwd=REPO, env=_env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not when():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "timed out waiting for the kill condition"
            time.sleep(0.02)
    finally:
        # torchrun starts each worker in its own session: kill the whole process tree, workers included
        tree = _descendants(proc.pid)
        for pid in [*tree, proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        _wait_gone(tree)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, f"processes {pids} survived SIGKILL"
        time.sleep(0.05)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(run_dir / "supernet.safetensors")).items() if v.is_floating_point()}


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
