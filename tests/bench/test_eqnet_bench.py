"""bench/eqnet.py in its smoke size (``--quick``): every run trains, every policy is measured, the RESULT line holds
the keys the README and the issue name, with finite top-1 values and a consistent dominance count."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nas.data.fashion_mnist import DEFAULT_ROOT

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["w8a8", "w6a6", "w4a4", "qat_w8a8", "qat_w4a4", "double_rounding_w8a8", "double_rounding_w6a6",
        "double_rounding_w4a4"]


@pytest.mark.skipif(not DEFAULT_ROOT.is_dir(), reason=f"Fashion-MNIST not installed at {DEFAULT_ROOT}")
def test_eqnet_bench_quick(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "bench/eqnet.py", "--quick", "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    assert len(re.findall(r"trained (EQNet|FixedArch)Sampler for 1 steps", out)) == 8  # 4 runs x 2 seeds
    result = next(line for line in out.splitlines() if line.startswith("RESULT "))
    values = dict(kv.split("=") for kv in result.split()[1:])
    assert values["front_dominates"] in ("true", "false")
    k, n = map(int, values["dominated"].split("/"))
    assert n == 6 and 0 <= k <= n  # 3 uniform policies x 2 seeds
    for key in KEYS:
        assert 0.0 <= float(values[key]) <= 100.0 and math.isfinite(float(values[f"{key}_hw"]))
    assert float(values["w8a8"]) > 50.0  # starts from the trained fp supernet: far above chance after one step
    assert (tmp_path / "s1_dr" / "supernet.json").is_file()  # the Double Rounding run saved its supernet
