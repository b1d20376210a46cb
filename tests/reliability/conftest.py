"""Shared helpers of the reliability suite: run a command in a subprocess, SIGKILL it at a chosen point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    e = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "NAS_DEBUG": ""}
    e.pop("NAS_DEBUG")
    return e


def run_cli(args: list[str], *, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def kill_when(args: list[str], ready: Callable[[], bool], *, cwd: Path, log_dir: Path, delay_s: float = 0.0,
              timeout: float = 120) -> int:
    """Start ``python args``; SIGKILL it ``delay_s`` after ``ready()`` first holds. Returns the exit code
    (``-SIGKILL``, or the normal code if it finished first)."""
    log = open(log_dir / f"kill-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                time.sleep(delay_s)
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    return proc.returncode


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs with one intra-op thread (``one_thread`` in tests/conftest.py)."""
