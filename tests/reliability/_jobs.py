"""Jobs the fault-injection tests run in a subprocess and SIGKILL: ``python -m tests.reliability._jobs search ...``.

A search on a tiny space (OFA-MBv3 for pymoo, NB201 for Optuna) with a deterministic proxy accuracy (a hash of the
architecture id) and a short sleep per evaluated architecture, so that kills land all over the ask / evaluate / tell /
checkpoint cycle.
"""

from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SPACE = "ofa_mbv3_tiny"
#: Optuna writes (and fsyncs) every parameter of every trial: a 6-gene space keeps its runs short on a busy disk
OPTUNA_SPACE = "nb201_tiny"
SEARCHERS = {"pymoo_nsga2": {"pop_size": 10}, "optuna_tpe": {}, "optuna_tpe_journal": {"storage": "journal"},
             "optuna_nsga2": {"sampler_kwargs": {"population_size": 6}}}


def objectives(space: Any, sleep_s: float = 0.0) -> list[Any]:
    from nas.search import Objective, params_objective

    def accuracy(archs: Sequence[Any]) -> np.ndarray:
        time.sleep(sleep_s * len(archs))
        return np.array([60 + (zlib.crc32(space.arch_id(a).encode()) % 4000) / 100 for a in archs])

    return [Objective("acc", accuracy, "max", expensive=True), params_objective(space)]


def space_of(searcher: str) -> str:
    return OPTUNA_SPACE if searcher.startswith("optuna") else SPACE


def search(out: str | Path, searcher: str, budget: int, sleep_s: float = 0.0) -> Any:
    from nas.search import run_search
    from search_spaces import create_space

    space, kwargs = create_space(space_of(searcher)), dict(SEARCHERS[searcher])
    if kwargs.get("storage") == "journal":  # a journal file in the run directory: faster than SQLite's commits
        kwargs["storage"] = f"journal://{Path(out).resolve() / 'study.log'}"
    return run_search(space, objectives(space, sleep_s), [], searcher.removesuffix("_journal"), budget=budget,
                      seed=3, out_dir=out, searcher_kwargs=kwargs, plot=False)


if __name__ == "__main__":
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kind, out, searcher, budget, sleep_s = sys.argv[1:6]
    assert kind == "search"
    search(out, searcher, int(budget), float(sleep_s))
