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


#: modules that hold one pytest-xdist worker for a minute or more (CI's --durations list, 2-core VM, 2026-12-07):
#: collected first, so that the workers start on them and finish on short modules instead of one worker running a
#: long module alone at the end (loadscope hands out whole modules in collection order)
LONG_MODULES = (
    "tests/distributed/test_ddp_train.py",
    "tests/search/test_verify.py",
    "tests/search/test_eqnet_cli.py",
    "tests/bench/test_cuda_smoke.py",
    "tests/hw_profiles/test_validation.py",
    "tests/export/test_export_cli.py",
    "tests/export/test_quant_export.py",
    "tests/search/test_readme_commands.py",
    "tests/reliability/test_kill_commands.py",
    "tests/train/test_shiftnas_generator.py",
    "tests/hw_profiles/test_builder.py",
)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).resolve().parents[1]
    rank = {root / m: i for i, m in enumerate(LONG_MODULES)}
    # stable: the order inside a module, and among the other modules, is kept
    items.sort(key=lambda item: rank.get(item.path, len(rank)))
