"""``verify.top=K``: the README's verified search on the embedded quantised default, run as a user runs it. The
measured values are the supernet's own (re-measured here), the verified front is the non-dominated set of the
measured points, the anchors are among them, a rerun measures nothing again, the printed export command exports the
most accurate measured point, and a preset without a supernet is refused before the search runs."""

from __future__ import annotations

import csv
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nas.checkpoints import load_supernet
from nas.data import create_data
from nas.evaluation import EvalSet, evaluate_subnets
from nas.search.results import read_results_dir
from nas.search.verify import _spread
from search_spaces.errors import BadInputError

from .test_readme_commands import readme_commands

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = REPO / "nas" / "embedded" / "quant_ofa_mbv3_fmnist"
FAST = ["budget=300", "verify.n_images=300", "verify.calib_images=200", "verify.calib_batch=100"]
OBJ = ("macs_M", "size_kB", "avg_w_bits")  # minimised; measured_top1 maximised


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nas.search", *args, f"results_root={tmp_path / 'results'}", "progress=false",
           f"hydra.run.dir={tmp_path / 'hydra'}"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def _dominates(a: dict[str, str], b: dict[str, str]) -> bool:
    va = [-float(a["measured_top1"]), *(float(a[k]) for k in OBJ)]
    vb = [-float(b["measured_top1"]), *(float(b[k]) for k in OBJ)]
    return all(x <= y for x, y in zip(va, vb)) and any(x < y for x, y in zip(va, vb))


def test_readme_verified_search(tmp_path):
    readme = readme_commands("python -m nas.search experiment=eqnet_fmnist verify.top=")
    assert readme == ["python -m nas.search experiment=eqnet_fmnist verify.top=40"]
    args = [*shlex.split(readme[0])[3:-1], "verify.top=8", *FAST]
    proc = _run(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = (tmp_path / "results" / "latest").resolve()
    with open(out / "verified.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    anchors = [r for r in rows if r["anchor"] == "True"]
    assert len(anchors) == 24  # smallest and largest arch x W3A3 ... W8A8 x (default, deployment modes)
    assert len([r for r in rows if r["on_search_front"] == "True"]) >= 8
    assert f"verified {len(rows)} points" in proc.stdout
    assert f"{len(rows)} newly measured" in proc.stdout

    # the measured top-1 is the supernet's: re-measure two points with the same settings
    net = load_supernet(EMBEDDED)
    evalset = EvalSet(create_data("fashion_mnist"), split="val", n_images=300, calib_images=200, calib_batch=100,
                      seed=0)
    again = evaluate_subnets(net, [net.space.from_json(r["arch"]) for r in rows[:2]], evalset)
    assert [a["top1"] for a in again] == [float(r["measured_top1"]) for r in rows[:2]]

    # the verified front is exactly the non-dominated set of the measured points
    front = [r for r in rows if r["on_verified_front"] == "True"]
    assert front and not any(_dominates(a, b) for a in front for b in front)
    assert all(any(_dominates(f, r) for f in front) for r in rows if r["on_verified_front"] != "True")
    ranked = json.loads((out / "verified_front.json").read_text())
    assert [r["arch_id"] for r in ranked] == [r["arch_id"] for r in sorted(front, key=lambda r:
                                                                           -float(r["measured_top1"]))]

    # a rerun of the same search measures nothing again (its search resumes from the finished checkpoint), and
    # export=0 then exports the most accurate *measured* point
    proc2 = _run(tmp_path, *args, "export=0")
    assert proc2.returncode == 0, proc2.stderr[-2000:]
    assert ", 0 newly measured" in proc2.stdout
    assert f"exported verified rank 0 {ranked[0]['arch_id']}" in proc2.stdout and "measured val top-1" in proc2.stdout
    meta = json.loads((out / "subnet_verified0" / "metadata.json").read_text())
    assert meta["arch_id"] == ranked[0]["arch_id"] and meta["front"] == "verified"

    # EXPORT.md's command exports the same point from the command line
    line = next(ln for ln in (out / "EXPORT.md").read_text().splitlines() if "front=verified" in ln)
    assert line == f"python -m nas.export results={out} front=verified rank=0 out={out}/subnet_verified0"
    cmd = shlex.split(line.replace(f"out={out}/subnet_verified0", f"out={tmp_path / 'sub'}"))
    exp = subprocess.run([sys.executable, *cmd[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert exp.returncode == 0, exp.stderr[-2000:]
    assert json.loads((tmp_path / "sub" / "metadata.json").read_text())["arch_id"] == ranked[0]["arch_id"]

    # a results dir without verification has no verified front to export; an unknown front is named
    bare = tmp_path / "bare"
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("verified*", "subnet_*", "checkpoint*"))
    with pytest.raises(BadInputError, match="verify.top=K"):
        read_results_dir(bare, "verified")
    with pytest.raises(BadInputError, match="choose one of"):
        read_results_dir(out, "best")


def test_verify_needs_a_trained_supernet(tmp_path):
    proc = _run(tmp_path, "experiment=ofa_imagenet", "verify.top=5")
    assert proc.returncode == 2
    msg = proc.stderr.strip().splitlines()[-1]
    assert "verify.top=5" in msg and "accuracy=measured" in msg and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()  # refused before the search ran


def test_spread_covers_the_front_and_grows_by_prefix():
    F = np.random.default_rng(0).random((30, 3))
    assert sorted(_spread(F, 100)) == list(range(30))
    small, large = _spread(F, 5), _spread(F, 12)
    assert large[:5] == small and small[0] == int(np.argmin(F[:, 0]))
    assert len(set(large)) == 12
