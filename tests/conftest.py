from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

YARDSTICKS = Path(__file__).resolve().parents[1].parent / "shared" / "yardsticks"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core: one OpenMP thread each, in this process and in every command a test
    # starts, or two workers' thread pools fight over two cores (spinning OpenMP threads make that 10x slower).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


@pytest.fixture
def yardsticks() -> Path:
    if not YARDSTICKS.is_dir():
        pytest.skip(f"reference data not found at {YARDSTICKS} (../shared/yardsticks beside the checkout)")
    return YARDSTICKS


@pytest.fixture
def one_thread():
    """One intra-op thread: on the shared 2-core machine two OpenMP threads thrash under load (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
