"""Predictor-in-the-loop search (LINAS: Cummings et al., "A Hardware-Aware Framework for Accelerating Neural
Architecture Search Across Modalities", 2022; IntelLabs DyNAS-T ``search_tactic.LINAS``).

Rounds of: measure a batch with the expensive metrics (supernet accuracy after BN recalibration, a benchmark
look-up), refit one predictor per expensive metric on everything measured so far, run a predictor-only inner search
(cheap metrics exact, expensive ones predicted), and take the best not-yet-measured architectures of the inner
search as the next batch. Unlike DyNAS-T, the batch never repeats an architecture already measured, so every
expensive evaluation buys new information. Round 0 is a random batch screened by the cheap constraints.

The log of measurements is the checkpoint (same format as :func:`nas.search.loop.run_search`); a restarted run
replays the rounds from the log without measuring again, which reproduces the uninterrupted run when the
predictor's fit is deterministic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.search.loop import (
    CHECKPOINT,
    _load_checkpoint,
    _signature,
    _write_checkpoint,
    build_result,
    check_feasible,
    run_search,
)
from nas.search.objectives import Constraint, Objective
from nas.search.problem import SearchProblem
from nas.search.results import SearchResult
from nas.search.searchers.base import Searcher, selection_order
from search_spaces.errors import BadInputError

__all__ = ["linas_search", "LinasResult", "LinasRound"]

log = logging.getLogger("nas.search")


@dataclass(frozen=True)
class LinasRound:
    """One round: how many were measured, and how well the predictor ranked the batch it proposed."""

    round: int
    n_measured: int
    batch_kendall_tau: dict[str, float]
    inner_seconds: float


@dataclass
class LinasResult:
    result: SearchResult
    rounds: list[LinasRound] = field(default_factory=list)


class _Signature(Searcher):
    """Carries the settings that define a LINAS run into the checkpoint signature (never asked)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def ask(self) -> np.ndarray:
        raise RuntimeError("a LINAS run is driven by linas_search, which proposes its batches itself")

    def tell(self, X: np.ndarray, evaluation: Any) -> None:
        raise RuntimeError("a LINAS run is driven by linas_search, which proposes its batches itself")

    def config(self) -> dict[str, Any]:
        return self.settings


def _predicted(metric: Objective | Constraint, predictor: Any) -> Objective | Constraint:
    """The metric with its measurement replaced by the predictor (cheap; batched on encodings if it can)."""
    def fn(archs: Sequence[Any]) -> np.ndarray:
        return np.asarray(predictor.predict(list(archs)), dtype=np.float64).reshape(-1)

    fast = getattr(predictor, "predict_encoded", None)
    fn_x = None if not callable(fast) else (lambda X: np.asarray(fast(X), dtype=np.float64).reshape(-1))
    if isinstance(metric, Objective):
        return Objective(metric.name, fn, direction=metric.direction, expensive=False, fn_x=fn_x)
    return Constraint(metric.name, fn, upper=metric.upper, lower=metric.lower, expensive=False, fn_x=fn_x)


def linas_search(space: Any, objectives: Sequence[Objective], constraints: Sequence[Constraint] = (), *,
                 predictor_factory: Callable[[], Any], rounds: int = 5, batch_size: int = 50,
                 inner_searcher: str = "pymoo_nsga2", inner_kwargs: Mapping[str, Any] | None = None,
                 inner_budget: int = 5000, seed: int = 0, out_dir: str | Path | None = None,
                 resume: bool = True) -> LinasResult:
    """Run ``rounds`` rounds of ``batch_size`` measurements; ``predictor_factory()`` returns an unfitted predictor
    with ``fit(archs, y)`` and ``predict(archs)`` (one per expensive metric, refit from scratch every round)."""
    if rounds < 1 or batch_size < 1:
        raise BadInputError(f"rounds and batch_size must be >= 1, got {rounds}, {batch_size}")
    problem = SearchProblem(space, objectives, constraints)
    if not problem.expensive:
        raise BadInputError("LINAS needs at least one expensive metric to predict; with only cheap metrics use "
                            "run_search directly")
    rng = np.random.default_rng([seed, 11])
    check_feasible(problem, rng)
    settings = {"rounds": rounds, "batch_size": batch_size, "inner_searcher": inner_searcher,
                "inner_kwargs": dict(inner_kwargs or {}), "inner_budget": inner_budget}
    signature = _signature(problem, "linas", _Signature(settings), seed)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if resume and (out / CHECKPOINT).exists():
            _load_checkpoint(out / CHECKPOINT, signature, problem)
    start, history = time.perf_counter(), []
    batch, predicted, inner_seconds = _random_batch(problem, rng, batch_size), {}, 0.0
    for r in range(rounds):
        problem.evaluate_x(batch)
        if out is not None:
            _write_checkpoint(out / CHECKPOINT, signature, problem, r + 1)
        history.append(LinasRound(r, problem.n_queries, _batch_tau(problem, batch, predicted), inner_seconds))
        log.info("LINAS round %d: %d measured; predictor tau on this batch %s", r, problem.n_queries,
                 history[-1].batch_kendall_tau)
        if r == rounds - 1:
            break
        t0 = time.perf_counter()
        batch, predicted = _propose(problem, predictor_factory, batch_size, inner_searcher, dict(inner_kwargs or {}),
                                    inner_budget, seed=int(np.random.SeedSequence([seed, r]).generate_state(1)[0]),
                                    rng=rng)
        inner_seconds = time.perf_counter() - t0
    result = build_result(problem, searcher="linas", searcher_config=settings, seed=seed,
                          budget=rounds * batch_size, stop_reason="rounds", seconds=time.perf_counter() - start)
    if out is not None:
        result.save(out)
    return LinasResult(result, history)


def _random_batch(problem: SearchProblem, rng: np.random.Generator, n: int) -> np.ndarray:
    X = problem.view.sample(20 * n, rng)
    X = X[problem.cheap_violation(X) <= 0]
    return np.unique(X, axis=0)[:n] if len(X) else problem.view.sample(n, rng)


def _propose(problem: SearchProblem, factory: Callable[[], Any], n: int, inner: str, inner_kwargs: dict[str, Any],
             inner_budget: int, *, seed: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rows = np.array(problem.history)
    archs = [problem.arch(int(r)) for r in rows]
    predictors = {}
    for name in problem.expensive:
        model = factory()
        model.fit(archs, problem.raw(rows)[:, problem.names.index(name)])
        predictors[name] = model
    swap = {name: _predicted(problem.metrics[name], predictors[name]) for name in predictors}
    objectives = [swap.get(o.name, o) for o in problem.objectives]
    constraints = [swap.get(c.name, c) for c in problem.constraints]
    inner_result = run_search(problem.space, objectives, constraints, inner, budget=inner_budget, seed=seed,
                              searcher_kwargs=inner_kwargs, max_stale_steps=20)
    fresh = ~problem.is_queried(inner_result.X)
    order = [i for i in selection_order(inner_result.F, inner_result.cv) if fresh[i]]
    batch = inner_result.X[order[:n]]
    if len(batch) < n:  # the inner search found too few new archs: top up with random ones
        extra = _random_batch(problem, rng, 4 * n)
        known = {row.tobytes() for row in batch}
        extra = [x for x in extra[~problem.is_queried(extra)] if x.tobytes() not in known]
        batch = np.concatenate([batch, np.array(extra, dtype=np.int64).reshape(-1, batch.shape[1])])[:n]
    predicted = {name: inner_result.metric(name)[order[:n]] for name in predictors}
    return batch, predicted


def _batch_tau(problem: SearchProblem, batch: np.ndarray, predicted: dict[str, np.ndarray]) -> dict[str, float]:
    """Kendall tau of predicted vs measured values on a batch the predictor proposed (after it was measured)."""
    from scipy.stats import kendalltau  # here, not at import: scipy.stats costs every command ~0.6 s

    out: dict[str, float] = {}
    if not predicted:
        return out
    ev_vals = problem.values(batch, list(predicted))
    for j, name in enumerate(predicted):
        p = predicted[name]
        m = ev_vals[: len(p), j]
        out[name] = float(kendalltau(p, m).statistic) if len(p) > 2 and np.ptp(m) > 0 else float("nan")
    return out
