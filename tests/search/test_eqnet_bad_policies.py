"""Bad input on the embedded quantised supernet ends in one clean message naming the value and what is allowed:
bits outside the space and a policy for another architecture (nas.export arch=<joint JSON>), a float latency table
for the quantised space (nas.search +hw=local_cpu)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas import embedded
from nas.checkpoints import load_supernet

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def space():
    return load_supernet(embedded.path(embedded.QUANT_DEFAULT)).space


def _export(arch: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nas.export", f"checkpoint={embedded.path(embedded.QUANT_DEFAULT)}",
           f"arch='{json.dumps(arch)}'", "recalibrate=false", f"out={tmp_path / 'out'}",
           f"hydra.run.dir={tmp_path / 'hydra'}"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def _policy(space, arch, w_bits):
    d = space.to_dict(space.policy_for(arch, 4, 4))
    d["policy"]["layers"] = [None if t is None else t.replace("w4", f"w{w_bits}", 1) if i not in (0,) and
                             i != len(d["policy"]["layers"]) - 1 else t for i, t in enumerate(d["policy"]["layers"])]
    return d


@pytest.mark.parametrize("case", ["bits", "other_arch"])
def test_bad_policies_get_one_clean_message(space, tmp_path, case):
    if case == "bits":
        arch, expect = _policy(space, space.base.max_arch(), 2), "is not allowed; choose one of [3, 4, 5, 6, 7, 8]"
    else:
        arch = _policy(space, space.base.max_arch(), 4)
        arch["arch"] = space.base.to_dict(space.base.min_arch())
        expect = "the policy does not fit architecture r24-k3e2"
    proc = _export(arch, tmp_path)
    assert proc.returncode != 0
    assert expect in proc.stderr, proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr


def test_a_float_latency_table_is_refused_for_the_quantised_space(tmp_path):
    cmd = [sys.executable, "-m", "nas.search", "experiment=eqnet_fmnist", "+hw=local_cpu",
           f"results_root={tmp_path / 'r'}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "hardware profile 'local_cpu' times float layers (torch); space 'quant_ofa_mbv3_fmnist' is quantised" \
        in proc.stderr, proc.stderr[-1500:]
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("front.csv"))
