"""nas.runtime.retain_freed_memory: large blocks are reused instead of page-faulted in again (checked in children,
since the setting is process-wide and permanent)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nas.runtime import supported

CHILD = r"""
import resource, sys
import torch
from nas.runtime import retain_freed_memory, retaining_freed_memory
on = retain_freed_memory() if sys.argv[1] == "1" else False
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(8, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 8, 3, padding=1))
x = torch.randn(32, 8, 96, 96)  # 37.7 MB activations: above the largest mmap threshold glibc adapts to (32 MiB)
seen = []
with torch.no_grad():
    for _ in range(7):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(x)
        seen.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(on, retaining_freed_memory(), sorted(seen[1:])[3])  # median pass after the first
"""

glibc = pytest.mark.skipif(not supported(), reason="retain_freed_memory acts on glibc malloc only")


def _run(flag: str, **env: str) -> tuple[bool, bool, int]:
    """(turned on, in effect, page faults of the median forward pass after the first)."""
    out = subprocess.run([sys.executable, "-c", CHILD, flag], env=dict(os.environ, **env), check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0] == "True", out[1] == "True", int(out[2])


@glibc
def test_retained_memory_is_reused_without_page_faults():
    on_default, _, faults_default = _run("0")
    on, active, faults_retained = _run("1")
    assert not on_default and on and active
    assert faults_default > 9000  # by default each pass faults its activations in again (4 KiB pages)
    assert faults_retained < 0.05 * faults_default


@glibc
def test_the_old_environment_variable_is_not_read():
    """The ``runtime`` config group is the one switch: ``NAS_RETAIN_MEMORY=0`` no longer overrides a call."""
    on, active, faults = _run("1", NAS_RETAIN_MEMORY="0")
    assert on and active and faults < 9000


def test_disabled_request_changes_nothing():
    from nas.runtime import retain_freed_memory, retaining_freed_memory

    before = retaining_freed_memory()
    assert retain_freed_memory(False) is before  # already on (an earlier CLI test) or still off
