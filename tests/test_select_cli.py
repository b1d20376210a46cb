"""``python -m nas.select``: SortedNet's search-free pick under a budget, from the command line, then exported with the
command it prints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = REPO / "nas" / "embedded" / "ofa_mbv3_fmnist"


def run(command: list[str] | str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    args = ["bash", "-c", command] if isinstance(command, str) else [sys.executable, "-m", *command]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_select_picks_the_largest_chain_member_in_budget_and_its_export_command_works(tmp_path):
    proc = run(["nas.select", f"checkpoint={EMBEDDED}", "budget=1500000", "data=fashion_mnist", "out=pick.json"],
               tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pick = json.loads((tmp_path / "pick.json").read_text())
    costs = pick["chain_costs"]
    assert costs == sorted(costs) and len(costs) > 2  # a sorted chain: every member nests in the next
    i = pick["chain"].index(pick["arch_id"])
    assert costs[i] <= 1500000 < (costs[i + 1] if i + 1 < len(costs) else float("inf"))
    command = re.search(r"^export: (.*)$", proc.stdout, re.M).group(1)
    proc = run(command + " +data.kwargs.test_limit=300", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "subnet" / "metadata.json").read_text())
    assert meta["arch_id"] == pick["arch_id"] and meta["macs"] == costs[i]


def test_budget_below_the_smallest_member_is_refused(tmp_path):
    proc = run(["nas.select", f"checkpoint={EMBEDDED}", "budget=10", "out=pick.json"], tmp_path)
    assert proc.returncode == 2 and "no sub-model fits macs <= 10.0" in proc.stderr
    assert not (tmp_path / "pick.json").exists()
