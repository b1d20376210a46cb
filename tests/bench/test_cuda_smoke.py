"""The CUDA smoke check in its CI size (``--device cpu --quick``), so the script cannot rot between GPU runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from nas.data.fashion_mnist import DEFAULT_ROOT

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not DEFAULT_ROOT.is_dir(), reason=f"Fashion-MNIST not installed at {DEFAULT_ROOT}")
def test_cuda_smoke_quick_on_cpu(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "bench/cuda_smoke.py", "--device", "cpu", "--quick", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    for n in range(1, 6):
        assert re.search(rf"^PASS step {n} ", out, re.M), f"step {n} did not pass:\n{out[-4000:]}"
    result = out.strip().splitlines()[-1]
    assert result.startswith("RESULT ") and "passed=5/5" in result
    # the DDP step really was killed mid-run and resumed (not killed after the run had ended)
    killed, total = map(int, re.search(r"ddp_resume=(\d+)->(\d+)", result).groups())
    assert killed < total
    # what the run left: the trained supernet, both evaluation tables, the exported subnet with its ONNX file
    assert (tmp_path / "train" / "supernet.safetensors").is_file()
    assert (tmp_path / "eval_cpu.csv").is_file()
    assert (tmp_path / "subnet" / "model.onnx").is_file()
