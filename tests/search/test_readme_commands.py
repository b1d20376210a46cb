"""The README's search commands, run verbatim one after another in one directory, as a new user would.

Each config gets its own results directory (no "belongs to another search" error when the second command runs),
``results/search/latest`` follows the last search, and the same config run again resumes in its own directory.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def readme_commands(prefix: str) -> list[str]:
    """Commands of the README's bash blocks starting with ``prefix`` (comments and continuation lines joined)."""
    text = (REPO / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            cmd = line.split("  #")[0].split(" # ")[0].strip()
            if cmd.startswith(prefix):
                out.append(cmd)
    return out


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    args = shlex.split(command)
    assert args[0] == "python"
    return subprocess.run([sys.executable, *args[1:], "progress=false"] if "nas.search" in command else
                          [sys.executable, *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _results_line(stdout: str) -> Path:
    return Path(re.search(r"^results: (\S+)", stdout, re.M).group(1))


def test_main_job_then_default_search_then_main_job_again(tmp_path):
    main_job = "python -m nas.search +hw=snapdragon855"
    assert main_job in readme_commands("python -m nas.search")
    assert "python -m nas.search" in readme_commands("python -m nas.search")
    first = run(main_job, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run("python -m nas.search", tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    d1, d2 = _results_line(first.stdout), _results_line(second.stdout)
    assert d1 != d2 and d1.parent == d2.parent == Path("results/search")
    assert (tmp_path / "results/search/latest").resolve() == (tmp_path / d2).resolve()
    front1 = json.loads((tmp_path / d1 / "front_ranked.json").read_text())
    assert "latency_ms" in front1[0] and "latency_ms" not in json.loads((tmp_path / d2 / "front_ranked.json")
                                                                         .read_text())[0]
    again = run(main_job, tmp_path)  # same config: resumes its own directory, the same front
    assert again.returncode == 0, again.stderr[-3000:]
    assert _results_line(again.stdout) == d1
    assert json.loads((tmp_path / d1 / "front_ranked.json").read_text()) == front1
    assert (tmp_path / "results/search/latest").resolve() == (tmp_path / d1).resolve()


@pytest.mark.slow
def test_every_readme_search_variation_runs_in_sequence(tmp_path):
    """All README search lines that need nothing but the package (not a training run or a profile of this machine),
    then the README's export of the latest front point."""
    # the quantised preset's lines run in tests/search/test_eqnet_cli.py (this sequence is near its timeout already)
    commands = [c for c in readme_commands("python -m nas.search") if "checkpoint=" not in c and "local_cpu" not in c
                and "experiment=eqnet_fmnist" not in c]
    dirs = set()
    for command in commands:
        proc = run(command, tmp_path)
        assert proc.returncode == 0, (command, proc.stderr[-3000:])
        dirs.add(_results_line(proc.stdout))
    assert len(dirs) == len(commands)
    export = [c for c in readme_commands("python -m nas.export") if "results/search/latest" in c]
    proc = run(export[0], tmp_path)  # the last search above has the embedded supernet
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "measured test top-1" in proc.stdout
