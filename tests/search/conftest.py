from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nas.search import Objective, table_objective
from search_spaces.nb201 import NB201IndexMap, NB201Space

YARDSTICKS = Path(__file__).resolve().parents[2].parent / "shared" / "yardsticks"
NB201_TABLE = YARDSTICKS / "nb201" / "nats_bench_tss_200ep.csv"


class CountingObjective:
    """Wraps an arch function and records every architecture it is asked to evaluate."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.seen = fn, []

    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        self.seen.extend(a.id for a in archs)
        return self.fn(archs)


def proxy_accuracy(space: NB201Space) -> Any:
    """A real, deterministic function of NB201 cells: log-MACs plus a penalty for cells whose output is cut off
    (no path input -> output avoids 'none'); peaked in the middle so neither the biggest nor smallest cell wins."""

    def connected(ops: tuple[str, ...]) -> bool:
        reach = {0}
        for (to, frm), op in zip(((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)), ops):
            if op != "none" and frm in reach:
                reach.add(to)
        return 3 in reach

    def fn(archs: Sequence[Any]) -> np.ndarray:
        out = []
        for a in archs:
            m = np.log(space.macs(a))
            out.append(90.0 - 4.0 * (m - 18.3) ** 2 - (0.0 if connected(a.ops) else 70.0)
                       + 0.3 * a.ops.count("skip_connect"))
        return np.array(out)

    return fn


@pytest.fixture(scope="session")
def nb201() -> NB201Space:
    return NB201Space()


@pytest.fixture(scope="session")
def nb201_c10(nb201: NB201Space) -> dict[str, float]:
    """{arch id: CIFAR-10 test accuracy} from the real NAS-Bench-201 table (skips if absent)."""
    if not NB201_TABLE.exists():
        pytest.skip(f"NAS-Bench-201 table not found at {NB201_TABLE} (../shared/yardsticks beside the checkout)")
    import pandas as pd

    index = NB201IndexMap.from_csv(NB201_TABLE)
    acc = pd.read_csv(NB201_TABLE)["CIFAR10TestAccuracy200Epochs"].to_numpy()
    return {index.arch(i).id: float(acc[i]) for i in range(len(index))}


@pytest.fixture
def proxy_objective(nb201: NB201Space) -> Objective:
    return Objective("proxy_acc", proxy_accuracy(nb201), direction="max", expensive=True)


def table_acc(space: NB201Space, table: dict[str, float]) -> Objective:
    return table_objective(space, table=table, name="acc", direction="max")
