"""Architecture search: problems built from a space's encoding, registered searchers, the driver and results.

``run_search(space, objectives, constraints, searcher, budget=..., seed=..., out_dir=...)`` is the library entry
point; ``linas_search`` runs the predictor-in-the-loop variant (LINAS, DyNAS-T).
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported from their modules on first use (PEP 562), so a command that only reads a results directory
# (nas.export) does not pay for the searchers' libraries (pymoo's algorithms pull in scipy.spatial: ~0.5 s).
_WHERE = {
    "EncodedView": "encoded", "LinasResult": "linas", "linas_search": "linas",
    "CheckpointMismatchError": "loop", "InfeasibleConstraintsError": "loop", "check_feasible": "loop",
    "run_search": "loop",
    **dict.fromkeys(("OBJECTIVES", "Constraint", "MissingArchError", "Objective", "create_objective", "hw_objective",
                     "macs_objective", "params_objective", "predictor_objective", "table_objective"), "objectives"),
    **dict.fromkeys(("default_reference_point", "hv_improvement_2d", "hypervolume", "pareto_front"), "pareto"),
    "Evaluation": "problem", "SearchProblem": "problem", "SearchResult": "results",
    **dict.fromkeys(("SEARCHERS", "Searcher", "SearcherConfigError", "StorageError", "create_searcher"), "searchers"),
}

__all__ = [
    "EncodedView", "run_search", "linas_search", "LinasResult", "InfeasibleConstraintsError",
    "CheckpointMismatchError", "check_feasible", "OBJECTIVES", "Objective", "Constraint", "MissingArchError",
    "create_objective", "hw_objective", "macs_objective", "params_objective", "predictor_objective", "table_objective",
    "pareto_front", "hypervolume", "default_reference_point", "hv_improvement_2d", "SearchProblem", "Evaluation",
    "SearchResult", "SEARCHERS", "Searcher", "SearcherConfigError", "StorageError", "create_searcher",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"nas.search.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nas.search' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
