"""pymoo backends (Blank & Deb, pymoo 0.6): GA, NSGA-II, NSGA-III and U-NSGA-III through ``algorithm.ask/tell``.

Integer encodings are searched with DyNAS-T's operator set by default (``IntegerRandomSampling``, SBX p=0.9 eta=15
and polynomial mutation eta=20, both followed by ``RoundingRepair``) or with the space's own operators
(``operators="space"``: per-gene resampling and uniform crossover, vectorised). Duplicates are eliminated by
architecture identity (canonical encoding), so two vectors differing only in inactive genes count as one.
NSGA-III/U-NSGA-III take Das-Dennis reference directions sized to the population for any number of objectives.
The algorithm's random state is pymoo's own ``numpy`` Generator seeded from the searcher seed.
"""

from __future__ import annotations

from collections.abc import Callable
from math import comb
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.algorithms.moo.unsga3 import UNSGA3
from pymoo.algorithms.soo.nonconvex.ga import GA
from pymoo.core.algorithm import Algorithm
from pymoo.core.crossover import Crossover
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.sampling import Sampling
from pymoo.core.termination import NoTermination
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.util.ref_dirs import get_reference_directions

from nas.registry import Registry
from nas.search.encoded import EncodedView
from nas.search.problem import Evaluation
from nas.search.searchers.base import SEARCHERS, Searcher, SearcherConfigError

__all__ = ["PymooSearcher", "ArchDuplicateElimination", "OPERATORS", "reference_directions"]


class AnchoredSampling(Sampling):
    """``inner``'s random first population with its first rows replaced by the space's anchors
    (``SearchSpace.anchors``: corner architectures a random start rarely draws), at most half of it."""

    def __init__(self, inner: Sampling, anchors: np.ndarray) -> None:
        super().__init__()
        self.inner, self.anchors = inner, anchors

    def _do(self, problem: Any, n_samples: int, **kwargs: Any) -> np.ndarray:
        X = np.array(self.inner._do(problem, n_samples, **kwargs))
        k = min(len(self.anchors), n_samples // 2)
        X[:k] = self.anchors[:k]
        return X


class ArchDuplicateElimination(DuplicateElimination):
    """Duplicates are rows encoding the same architecture (equal canonical encodings); with ``known``, offspring
    that were already evaluated at any earlier generation are duplicates too (an archive, as in NSGA-Net), so a
    converged population keeps proposing new architectures instead of free repeats."""

    def __init__(self, view: EncodedView, known: Any = None) -> None:
        super().__init__()
        self.view, self.known = view, known

    def _do(self, pop: Any, other: Any, is_duplicate: np.ndarray) -> np.ndarray:
        X = pop.get("X")
        seen = set() if other is None else set(self.view.keys(self.view.canonical(other.get("X"))))
        if other is None and self.known is not None and len(X):
            is_duplicate |= self.known(X)
        for i, key in enumerate(self.view.keys(self.view.canonical(X))):
            if key in seen:
                is_duplicate[i] = True
            elif other is None:
                seen.add(key)
        return is_duplicate


class SpaceMutation(Mutation):
    """Resample each gene with probability ``1 / n_genes`` (the space's ``mutate``), vectorised."""

    def __init__(self, view: EncodedView, prob_var: float | None = None) -> None:
        super().__init__(prob=1.0)
        self.view, self.gene_prob = view, prob_var

    def _do(self, problem: Any, X: np.ndarray, *args: Any, random_state: Any = None, **kwargs: Any) -> np.ndarray:
        p = self.gene_prob if self.gene_prob is not None else 1.0 / self.view.n_genes
        X = np.asarray(np.rint(X), dtype=np.int64)
        return np.where(random_state.random(X.shape) < p, random_state.integers(0, self.view.sizes, X.shape), X)


class SpaceCrossover(Crossover):
    """Uniform crossover per gene (the space's ``crossover``), two parents, two children."""

    def __init__(self, prob: float = 0.9) -> None:
        super().__init__(n_parents=2, n_offsprings=2, prob=prob)

    def _do(self, problem: Any, X: np.ndarray, *args: Any, random_state: Any = None, **kwargs: Any) -> np.ndarray:
        swap = random_state.random(X.shape[1:]) < 0.5
        return np.stack([np.where(swap, X[0], X[1]), np.where(swap, X[1], X[0])])


OperatorSet = dict[str, Any]
OPERATORS: Registry[OperatorSet] = Registry("pymoo operator set")


@OPERATORS.register("sbx_pm")
def _sbx_pm(view: EncodedView, *, sbx_prob: float = 0.9, sbx_eta: float = 15.0, pm_eta: float = 20.0) -> OperatorSet:
    return {"sampling": IntegerRandomSampling(),
            "crossover": SBX(prob=sbx_prob, eta=sbx_eta, vtype=float, repair=RoundingRepair()),
            "mutation": PM(prob=1.0, eta=pm_eta, vtype=float, repair=RoundingRepair())}


@OPERATORS.register("space")
def _space_ops(view: EncodedView, *, crossover_prob: float = 0.9, mutate_prob: float | None = None) -> OperatorSet:
    return {"sampling": IntegerRandomSampling(), "crossover": SpaceCrossover(crossover_prob),
            "mutation": SpaceMutation(view, mutate_prob)}


def reference_directions(n_obj: int, max_points: int) -> np.ndarray:
    """Das-Dennis directions with the most partitions whose count stays within ``max_points``."""
    if n_obj == 1:
        return np.ones((1, 1))
    p = 1
    while comb(p + 1 + n_obj - 1, n_obj - 1) <= max_points:
        p += 1
    return get_reference_directions("das-dennis", n_obj, n_partitions=p)


AlgorithmFactory = Callable[[int, int, OperatorSet, DuplicateElimination], Algorithm]
_ALGORITHMS: dict[str, tuple[AlgorithmFactory, int | None]] = {
    "ga": (lambda n_obj, pop, ops, dup: GA(pop_size=pop, eliminate_duplicates=dup, **ops), 1),
    "nsga2": (lambda n_obj, pop, ops, dup: NSGA2(pop_size=pop, eliminate_duplicates=dup, **ops), None),
    "nsga3": (lambda n_obj, pop, ops, dup: NSGA3(reference_directions(n_obj, pop), pop_size=pop,
                                                 eliminate_duplicates=dup, **ops), None),
    "unsga3": (lambda n_obj, pop, ops, dup: UNSGA3(reference_directions(n_obj, pop), pop_size=pop,
                                                   eliminate_duplicates=dup, **ops), None),
}


class PymooSearcher(Searcher):
    """Drive a pymoo algorithm with ask/tell; evaluations go through the problem's cached, vectorised path."""

    def __init__(self, algorithm: str, *, pop_size: int = 50, operators: str = "sbx_pm",
                 operator_kwargs: dict[str, Any] | None = None, eliminate_duplicates: bool = True,
                 eliminate_known: bool = True, max_mating_iterations: int = 10, anchors: bool = True) -> None:
        if algorithm not in _ALGORITHMS:
            raise SearcherConfigError(f"unknown pymoo algorithm {algorithm!r}; choose from {sorted(_ALGORITHMS)}")
        OPERATORS.get(operators)  # fail early with the list of operator sets
        if pop_size < 2:
            raise SearcherConfigError(f"pop_size must be >= 2, got {pop_size}")
        self.algorithm_name, self.pop_size, self.operators = algorithm, pop_size, operators
        self.operator_kwargs, self.eliminate_duplicates = dict(operator_kwargs or {}), eliminate_duplicates
        # pymoo retries mating up to 100 times per generation to fill the offspring with non-duplicates; once a
        # population has converged in a small space that is all it does. Fewer retries give a smaller batch instead
        # (an empty one ends the search).
        self.max_mating_iterations, self.eliminate_known = max_mating_iterations, eliminate_known
        self.max_objectives = _ALGORITHMS[algorithm][1]
        self.anchors = anchors  # seed the first population with space.anchors()

    def _setup(self) -> None:
        view = self.problem.view
        ops = OPERATORS.create(self.operators, view=view, **self.operator_kwargs)
        if self.anchors:
            corners = view.canonical(view.encode(view.space.anchors()))
            ops["sampling"] = AnchoredSampling(ops["sampling"], np.unique(corners, axis=0))
        known = self.problem.is_queried if self.eliminate_known else None
        dup: Any = ArchDuplicateElimination(view, known) if self.eliminate_duplicates else False
        self.algorithm = _ALGORITHMS[self.algorithm_name][0](self.problem.n_obj, self.pop_size, ops, dup)
        self.algorithm.mating.n_max_iterations = self.max_mating_iterations
        self.pymoo_problem = self.problem.to_pymoo()
        self.algorithm.setup(self.pymoo_problem, termination=NoTermination(), seed=self.seed, verbose=False)
        self._pending: Any = None
        self._done = False

    def ask(self) -> np.ndarray:
        self._pending = self.algorithm.ask()
        if self._pending is None or not len(self._pending):  # pymoo: mating found no new offspring, terminate
            self._done = True
            return np.zeros((0, self.problem.view.n_genes), dtype=np.int64)
        return np.asarray(np.rint(self._pending.get("X")), dtype=np.int64)

    @property
    def done(self) -> bool:
        return self._done

    def tell(self, X: np.ndarray, evaluation: Evaluation) -> None:
        pop = self._pending[: len(X)]
        self.algorithm.evaluator.eval(self.pymoo_problem, pop)  # served from the problem's cache
        self.algorithm.tell(infills=pop)

    def config(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm_name, "pop_size": self.pop_size, "operators": self.operators,
                "operator_kwargs": self.operator_kwargs, "eliminate_duplicates": self.eliminate_duplicates,
                "eliminate_known": self.eliminate_known, "max_mating_iterations": self.max_mating_iterations,
                "anchors": self.anchors}


def _register(name: str, algorithm: str) -> None:
    def factory(**kwargs: Any) -> PymooSearcher:
        return PymooSearcher(algorithm, **kwargs)

    factory.__doc__ = f"pymoo {algorithm.upper()} (see :class:`PymooSearcher` for the settings)."
    SEARCHERS.add(name, factory)


for _name, _algo in (("pymoo_ga", "ga"), ("pymoo_nsga2", "nsga2"), ("pymoo_nsga3", "nsga3"),
                     ("pymoo_unsga3", "unsga3")):
    _register(_name, _algo)
