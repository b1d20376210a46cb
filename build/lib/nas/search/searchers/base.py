"""The searcher contract: an ask/tell strategy over a :class:`~nas.search.problem.SearchProblem`.

Like Optuna's ask/tell interface and pymoo's ``algorithm.ask()/tell()``, a searcher proposes a batch of encodings
and is told their evaluation; the driver (:func:`nas.search.loop.run_search`) owns the loop, the budget, the cache
and checkpoints. A searcher must be a deterministic function of its seed and of what it was told, so a search can
be resumed by replaying the logged evaluations (``replayable``); searchers whose state lives in external storage
(Optuna studies) set ``persistent`` and restore from it instead.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from nas.registry import Registry
from nas.search.problem import Evaluation, SearchProblem

__all__ = ["Searcher", "SEARCHERS", "create_searcher", "SearcherConfigError", "selection_order"]


class SearcherConfigError(ValueError):
    """A searcher cannot handle the problem it was given (e.g. a single-objective method on two objectives)."""


class Searcher(abc.ABC):
    """Base class: subclasses implement :meth:`ask` and :meth:`tell`; :meth:`setup` is called once first."""

    #: how many objectives the method handles (``None`` = any)
    max_objectives: int | None = None
    #: state is kept outside the process (e.g. an Optuna storage); resume restores from there, not by replay
    persistent: bool = False

    def setup(self, problem: SearchProblem, seed: int, workdir: Path | None = None) -> None:
        """Bind to a problem; ``workdir`` is the run directory (searchers may keep files there)."""
        if self.max_objectives is not None and problem.n_obj > self.max_objectives:
            raise SearcherConfigError(
                f"searcher {type(self).__name__} optimises at most {self.max_objectives} objective(s), the problem "
                f"has {problem.n_obj} ({[o.name for o in problem.objectives]}); choose a multi-objective searcher"
            )
        self.problem, self.seed, self.workdir = problem, int(seed), workdir
        self.rng = np.random.default_rng(self.seed)
        self._setup()

    def _setup(self) -> None:  # noqa: B027 - optional hook, most searchers need no set-up
        """Per-run initialisation after ``problem``, ``seed`` and ``rng`` are set."""

    @abc.abstractmethod
    def ask(self) -> np.ndarray:
        """The next batch of encodings to evaluate, shape ``(n, n_genes)``."""

    @abc.abstractmethod
    def tell(self, X: np.ndarray, evaluation: Evaluation) -> None:
        """Receive the evaluation of (a prefix of) the last batch."""

    @property
    def done(self) -> bool:
        """True when the method has nothing left to propose (e.g. a finite space is exhausted)."""
        return False

    def config(self) -> dict[str, Any]:
        """Constructor settings, for results and checkpoints."""
        return {}


def selection_order(F: np.ndarray, cv: np.ndarray) -> np.ndarray:
    """Indices best first under Deb's feasibility rule: feasible before infeasible (by violation); among feasible,
    by the objective (one objective) or by non-dominated rank then crowding distance (NSGA-II's order)."""
    F, cv = np.asarray(F, dtype=np.float64), np.asarray(cv, dtype=np.float64)
    if F.shape[1] == 1:
        return np.lexsort((F[:, 0], cv))
    rank = np.zeros(len(F))
    crowd = np.zeros(len(F))
    ok = np.flatnonzero(cv <= 0)
    if len(ok):
        for i, front in enumerate(NonDominatedSorting().do(F[ok])):
            rank[ok[front]] = i
        crowd[ok] = crowding_by_front(F[ok], rank[ok].astype(np.int64))
    return np.lexsort((-crowd, rank, cv))


def crowding_by_front(F: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of every point within its own front (``rank``), all fronts at once: per objective,
    sort by (front, value); a front's extremes get infinity, inner points the normalised gap between neighbours."""
    n = len(F)
    out = np.zeros(n)
    if n == 0:
        return out
    for j in range(F.shape[1]):
        o = np.lexsort((F[:, j], rank))
        r, v = rank[o], F[o, j]
        first = np.r_[True, r[1:] != r[:-1]]
        last = np.r_[r[1:] != r[:-1], True]
        seg = np.cumsum(first) - 1
        span = (v[last] - v[first])[seg]
        gap = np.r_[v[1:], v[-1]] - np.r_[v[0], v[:-1]]
        inner = np.where(span > 0, gap / np.where(span > 0, span, 1.0), 0.0)
        out[o] += np.where(first | last, np.inf, inner)
    out[np.bincount(rank)[rank] <= 2] = np.inf
    return out


SEARCHERS: Registry[Searcher] = Registry("searcher")


def create_searcher(name: str, **kwargs: Any) -> Searcher:
    """Create a registered searcher by name (``create_searcher("pymoo_nsga2", pop_size=50)``)."""
    return SEARCHERS.create(name, **kwargs)
