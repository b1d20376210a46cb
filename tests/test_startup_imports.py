"""Start-up cost of the commands: what importing each one pulls in.

Every command pays its imports before it reads its first argument, so a typo or a ``--help`` waits for them too.
torch (~1.7 s here) is unavoidable; torchvision (it pulls in torch._dynamo, ~1.3 s), scipy.stats (~0.6 s) and pymoo's
algorithms (~0.5 s) are imported where they are used, not at start-up of a command that does not need them
(nas.train needs timm, which imports torchvision, to build its optimizer and schedule).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torchvision", "torch._dynamo", "scipy.stats", "pymoo.algorithms.moo.nsga2", "sklearn", "optuna")


def _imported(module: str) -> list[str]:
    code = (f"import json, sys, {module}; "
            f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", ["nas.export", "nas.evaluate", "nas.profile", "nas.search.__main__"])
def test_commands_start_without_the_libraries_they_do_not_use(command: str) -> None:
    extra = _imported(command)
    assert not extra, f"importing {command} pulls in {extra}: import them where they are used"
