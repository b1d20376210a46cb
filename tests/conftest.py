from __future__ import annotations

from pathlib import Path

import pytest
import torch

YARDSTICKS = Path(__file__).resolve().parents[1].parent / "shared" / "yardsticks"

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
