"""Architecture search: problems built from a space's encoding, registered searchers, the driver and results.

``run_search(space, objectives, constraints, searcher, budget=..., seed=..., out_dir=...)`` is the library entry
point; ``linas_search`` runs the predictor-in-the-loop variant (LINAS, DyNAS-T).
"""

from __future__ import annotations

from nas.search.encoded import EncodedView
from nas.search.linas import LinasResult, linas_search
from nas.search.loop import CheckpointMismatchError, InfeasibleConstraintsError, check_feasible, run_search
from nas.search.objectives import (
    OBJECTIVES,
    Constraint,
    MissingArchError,
    Objective,
    create_objective,
    hw_objective,
    macs_objective,
    params_objective,
    predictor_objective,
    table_objective,
)
from nas.search.pareto import default_reference_point, hv_improvement_2d, hypervolume, pareto_front
from nas.search.problem import Evaluation, SearchProblem
from nas.search.results import SearchResult
from nas.search.searchers import SEARCHERS, Searcher, SearcherConfigError, StorageError, create_searcher

__all__ = [
    "EncodedView", "run_search", "linas_search", "LinasResult", "InfeasibleConstraintsError",
    "CheckpointMismatchError", "check_feasible", "OBJECTIVES", "Objective", "Constraint", "MissingArchError",
    "create_objective", "hw_objective", "macs_objective", "params_objective", "predictor_objective", "table_objective",
    "pareto_front", "hypervolume", "default_reference_point", "hv_improvement_2d", "SearchProblem", "Evaluation",
    "SearchResult", "SEARCHERS", "Searcher", "SearcherConfigError", "StorageError", "create_searcher",
]

# Quantisation-policy objectives (EQ-Net); importing registers model_size, avg_bits, bitops, supernet_accuracy.
from nas.search import objectives_quant as _objectives_quant  # noqa: E402,F401
