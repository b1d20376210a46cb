"""The README's joint architecture x bit-width search on the embedded quantised default, run as a user runs it:
front columns (top-1, cost, size, average bits), policy constraints honoured, results directory written; and
EQ-Net's GA from the command line keeps its front inside the average-bits window."""

from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nas.checkpoints import load_supernet
from nas.export_subnet import ExportError, _check_same_space
from search_spaces.quant_costs import average_bits

from .test_readme_commands import readme_commands

REPO = Path(__file__).resolve().parents[2]


def _search(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    root = tmp_path / "results"
    cmd = [sys.executable, "-m", "nas.search", *args, f"results_root={root}",
           "progress=false", f"hydra.run.dir={tmp_path / 'hydra'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, (root / "latest").resolve()


def _front(out: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(out / "front.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_readme_search_with_policy_constraints(tmp_path):
    readme = [c for c in readme_commands("python -m nas.search experiment=eqnet_fmnist") if "model_size" in c]
    assert readme == ["python -m nas.search experiment=eqnet_fmnist constraints=\"['avg_bits<=5', 'model_size<=40']\""]
    proc, out = _search(tmp_path, *shlex.split(readme[0])[3:])
    assert float(json.loads((out / "result.json").read_text())["seconds"]) < 60  # README: ~30 s, offline
    header = "top1     macs_M    size_kB avg_w_bits"
    assert header in proc.stdout and "pymoo_nsga2 searched 1500 architectures of quant_ofa_mbv3_fmnist" in proc.stdout
    cols, rows = _front(out)
    assert cols[2:6] == ["top1", "macs_M", "size_kB", "avg_w_bits"]
    assert len(rows) >= 5
    assert all(float(r["avg_w_bits"]) <= 5 + 1e-9 and float(r["size_kB"]) <= 40 + 1e-9 for r in rows)
    assert {"front.csv", "result.json", "config.yaml", "EXPORT.md", "pareto.png"} <= {p.name for p in out.iterdir()}
    result = json.loads((out / "result.json").read_text())
    assert result["space"]["space_name"] == "quant_ofa_mbv3_fmnist" and result["n_queries"] == 1500
    top = [float(r["top1"]) for r in rows]
    assert 70 < min(top) <= max(top) < 95  # predicted from measured Fashion-MNIST top-1 of the quantised supernet


def test_eqnet_ga_from_the_command_line_stays_in_the_window(tmp_path):
    readme = [c for c in readme_commands("python -m nas.search experiment=eqnet_fmnist searcher=eqnet_ga")]
    assert readme == ["python -m nas.search experiment=eqnet_fmnist searcher=eqnet_ga constraints=\"['avg_bits<=4']\""]
    _, out = _search(tmp_path, *shlex.split(readme[0])[3:], "budget=200", "searcher.kwargs.population_size=40")
    space = load_supernet(REPO / "nas/embedded/quant_ofa_mbv3_fmnist").space
    _, rows = _front(out)
    assert rows
    for r in rows:
        joint = space.from_json(r["arch"])
        for kind in ("w", "a"):
            assert 3.5 < average_bits(space, joint, kind) <= 4.0 + 1e-9


def test_a_front_point_of_the_quantised_search_matches_its_checkpoint(tmp_path):
    """nas.export results=<eqnet_fmnist search> checks the point's space against the checkpoint's spec: a joint
    space's spec names its factory ('quant') and the space ('quant_ofa_mbv3_fmnist') apart."""
    ckpt = REPO / "nas/embedded/quant_ofa_mbv3_fmnist"
    _check_same_space(tmp_path, {"arch": {"space": "quant_ofa_mbv3_fmnist"}}, ckpt)
    with pytest.raises(ExportError, match="is a supernet of space 'quant_ofa_mbv3_fmnist'"):
        _check_same_space(tmp_path, {"arch": {"space": "ofa_mbv3_fmnist"}}, ckpt)


def test_readme_search_with_int8_latency_then_export(tmp_path):
    """The README's bit-aware search: `+hw=local_cpu_int8` prices (arch, policy) pairs from an ONNX Runtime int8
    table of this machine, honours a latency and an average-bits bound, says what the points run as; exporting the
    most accurate point by its arch id to the int8 runtime is refused for its sub-8-bit layers, with the documented
    fallback (the fake-quant export of a joint point: tests/export/test_quant_export.py)."""
    import numpy as np

    from hw_profiles import create_hw_profile

    readme = [c for c in readme_commands("python -m nas.search experiment=eqnet_fmnist +hw=local_cpu_int8")]
    assert readme == ["python -m nas.search experiment=eqnet_fmnist +hw=local_cpu_int8 "
                      "constraints=\"['latency_ms<=0.17', 'avg_bits<=5']\""]
    table = tmp_path / "int8.json"
    build = [f"hw.kwargs.path={table}", "hw.build.repeats=3", "hw.build.passes=1", "hw.build.warmup=1",
             "hw.build.calibration_nets=2", "hw.build.calibration_processes=1"]
    prof = subprocess.run([sys.executable, "-m", "nas.profile", "hw=local_cpu_int8", "space.name=quant_ofa_mbv3_fmnist",
                           f"out={table}", *build[1:], f"hydra.run.dir={tmp_path / 'hydra_p'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert prof.returncode == 0, prof.stderr[-2000:]
    # the README's bound is this machine's; here the median price of random pairs, so about half are feasible
    space = load_supernet(REPO / "nas/embedded/quant_ofa_mbv3_fmnist").space
    price = create_hw_profile("local_cpu_int8", path=table)
    bound = round(float(np.median(price(space, [space.sample(i) for i in range(64)]))), 4)  # as the command has it
    args = shlex.split(readme[0].replace("latency_ms<=0.17", f"latency_ms<={bound:.4f}"))[3:]
    proc, out = _search(tmp_path, *args, *build, "budget=300")
    assert "runs as" in proc.stdout and re.search(r"int8 \(W\d-8 A\d-8 held in int8\)", proc.stdout)
    assert "priced from measured entries" in proc.stdout
    cols, rows = _front(out)
    assert cols[2:6] == ["top1", "latency_ms", "size_kB", "avg_w_bits"] and len(rows) >= 3
    assert all(float(r["latency_ms"]) <= bound + 1e-9 and float(r["avg_w_bits"]) <= 5 + 1e-9 for r in rows)
    best = json.loads((out / "front_ranked.json").read_text())[0]["arch_id"]
    ckpt = REPO / "nas/embedded/quant_ofa_mbv3_fmnist"
    export = [sys.executable, "-m", "nas.export", f"checkpoint={ckpt}", f"arch={best}", "data=fashion_mnist",
              "data.kwargs.test_limit=500"]
    assert min(q.w_bits for q in space.from_id(best).policy.layers if q) < 8  # a mixed policy
    refused = subprocess.run([*export, "format=onnx_int8", f"out={tmp_path / 'int8'}"], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "runs 8-bit integer kernels only" in refused.stderr
    assert "fallback=fake_quant" in refused.stderr and not (tmp_path / "int8").exists()
